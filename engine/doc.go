// Package engine is the domain of saga-machine: the executable model of a saga
// definition (built on looplab/fsm, which stays hidden here), the message
// envelope exchanged with participants, saga instances and their history, the
// error type with stable codes, and the orchestrator that applies events to
// instances.
//
// The package imports no database and no broker: storage and transport are
// small interfaces declared here and implemented in sub-packages
// (engine/sqlstore, engine/kafka); cmd/ wires them together.
package engine
