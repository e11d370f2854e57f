package definition

// Parse reads one definition file's bytes, checks it against every rule of the
// language and returns the Definition, or every problem found (sorted). It
// never panics, whatever the input. name is used as FILE in problems.
//
// TODO(definition helper): implement. Signature is the contract.
func Parse(name string, data []byte) (*Definition, Problems) {
	panic("definition.Parse: not implemented yet")
}
