package engine

import (
	"github.com/portfolio-counselor/sagamachine/engine/definition"
)

// Model is the immutable, executable form of one validated Definition. It is
// safe for concurrent use. looplab/fsm does the state-machine work inside and
// never shows in this API.
//
// TODO(model helper): implement every method; the signatures are the contract
// other packages code against.
type Model struct {
	def *definition.Definition
}

// Step is the outcome of applying one event to one state.
type Step struct {
	From   string       // state before ("" when the event starts a saga)
	Event  string       // event applied
	By     string       // participant that emitted it (definition.Engine for timers)
	To     string       // state after
	Send   *CommandSpec // command to send, nil if none
	Final  bool         // To is a success terminal state
	Failed bool         // To is a failure terminal state
}

// CommandSpec is a command that a transition sends.
type CommandSpec struct {
	Participant string
	Topic       string
	Name        string
	Retry       *definition.Retry // nil: send once
}

// Compile turns a validated definition into a Model. It fails only if def
// breaks an invariant the validator guarantees (a programming error).
func Compile(def *definition.Definition) (*Model, error) { panic("not implemented") }

// Definition returns the definition the model was compiled from. Callers must
// not modify it.
func (m *Model) Definition() *definition.Definition { return m.def }

// Name is the saga name, e.g. MANUAL_CREATE_ORDER.
func (m *Model) Name() string { return m.def.Saga }

// Version is the definition version.
func (m *Model) Version() int { return m.def.Version }

// Apply returns the step taken when participant by emits event in state
// (state "" means the saga does not exist yet, so only starting events are
// allowed). When the event is not allowed it returns an *Error with code
// CodeUnknownEvent, CodeIllegal, CodeWrongParticipant or CodeFinished and a
// message naming the events that are allowed in state.
func (m *Model) Apply(state, event, by string) (Step, error) { panic("not implemented") }
