// Package errs is saga-machine's one error type: Error, with a stable Code
// that HTTP handlers map to statuses and problem types in one table. The
// engine (engine.Error is an alias), its stores and the participant SDK all
// return it, so a caller asks ErrorCode(err) whichever of them failed. It
// imports nothing of the repository.
package errs
