package definition

import (
	"time"

	"github.com/portfolio-counselor/sagamachine/engine/envelope"
	"github.com/portfolio-counselor/sagamachine/engine/expr"
)

// Engine is the reserved participant name for events that the saga machine
// raises itself: state timeouts and exhausted command retries.
const Engine = "engine"

// CommandExpired is the reserved event name of a participant's answer to a
// command that reached it after its deadline: the command had no effect.
// No definition may use it for an event of its own. It is the envelope's
// name (envelope.CommandExpired), which the participant SDK answers with.
const CommandExpired = envelope.CommandExpired

// Abort is the reserved event the engine raises when an operator aborts a
// saga (saga-machine's POST /api/v1/sagas/{id}/abort). A definition may
// handle it with `on: ABORT, by: engine` from states that are not final or
// failed, into a failed state: the abort then takes that transition, and
// its send (telling the client, for instance) goes out after the undo, as
// on any transition into a failed state. Without such a transition an
// abort moves the saga into the failed state the operator names, undoes
// what it did and sends nothing. Either way the event's payload,
// {"abort": {"at": <time>}}, joins the saga's context, so that the
// compensations and the send can tell an abort from a failure. No
// definition may use the name for an event of its own.
const Abort = "ABORT"

// API is the reserved participant name of starting transitions that an
// authenticated caller fires over saga-machine's HTTP API (`by: api`). Such a
// transition lists the roles that may fire it (Transition.Roles). A
// transition `by:` a participant can never be fired over HTTP.
const API = "api"

// Pos is a position in a definition file. Line and Col start at 1; the zero
// Pos means "unknown" (for example for a value that was absent).
type Pos struct {
	Line int `json:"line"`
	Col  int `json:"col"`
}

// Definition is one parsed and validated saga definition file.
type Definition struct {
	File         string                  // path as given to Parse, used in problems
	Saga         string                  // UPPER_SNAKE name, e.g. MANUAL_CREATE_ORDER
	Version      int                     // positive; instances keep the version they started with
	Description  string                  // optional, for humans
	Participants map[string]*Participant // by participant name
	Keys         map[string]*Key         // business keys, by key name
	States       map[string]*State       // every state that appears anywhere, by name
	Transitions  []*Transition           // in file order
	Final        []Name                  // success terminal states, in file order
	Failed       []Name                  // failure terminal states, in file order
	// Events holds the data contracts of the `events:` section, by event
	// name: the JSON Schema an event's payload must satisfy and the
	// top-level context keys it may write. An event without an entry has
	// no schema and may write any key no other participant owns.
	Events map[string]*Event
	Pos    Pos // of the document's root mapping
}

// Name is a name with the position where it was written.
type Name struct {
	Value string
	Pos   Pos
}

// Participant is a service that receives commands on its own topic and emits
// events to the saga machine.
type Participant struct {
	Name        string
	Topic       string
	Description string
	Pos         Pos
}

// Key is a business key that the saga machine extracts from the saga's context
// document so sagas can be searched by it (for example a deal id). Path is a
// dotted path into the context JSON object, e.g. "deal_context.deal_id".
type Key struct {
	Name string
	Path string
	Pos  Pos
}

// State holds the optional per-state settings from the `states:` section.
// States that appear only in transitions, final or failed also get an entry
// (with Declared false).
type State struct {
	Name        string
	Description string
	Timeout     *Timeout // nil when the state has no time limit
	Declared    bool     // true when the state has an entry under `states:`
	Pos         Pos      // where it is declared, or first mentioned
}

// Timeout raises Event when a saga stays in a state for longer than After.
type Timeout struct {
	After time.Duration
	Event Name
	Pos   Pos
}

// Transition is one row of the analyst's table: when participant By emits
// event On while the saga is in one of From, the saga moves to To and, if Send
// is set, sends a command. An empty From means On starts a new saga.
type Transition struct {
	On          Name
	By          Name
	From        []Name
	To          Name
	Roles       []Name        // by: api only: the roles that may fire it over HTTP (any one suffices); nil otherwise
	Compensate  *Compensation // undoes what By did before emitting On; nil if none
	Send        *Send         // one command (send: as a mapping); nil if none or a parallel step
	Description string
	Pos         Pos

	// When is the transition's condition (a decision on data), nil for
	// none. The transitions of one event in one state form a decision
	// group: their conditions are evaluated in file order, the first that
	// holds applies, and the one transition without When is the default.
	When *Expr
	// Branches are the commands of a parallel step (send: as a list), sent
	// at once; nil for a transition that sends one command or none. Each
	// has its reply events (Send.OK, Send.Fail). Join says when the step
	// is over; the saga waits for it in To.
	Branches []*Send
	Join     *Join

	rolesPos    Pos  // of the `roles` key, for problems about it
	whenWritten bool // the file gives a when (which may not compile: When is then nil)
}

// Parallel reports whether the transition is a parallel step.
func (t *Transition) Parallel() bool { return t.Join != nil }

// Expr is an expression of the definition (CEL, see package expr), compiled
// when the file is read.
type Expr struct {
	Text    string
	Program *expr.Program
	Pos     Pos // where the expression starts in the file
}

// Join is the end of a parallel step: how many branches must succeed
// (Policy and N), and the events the engine raises in the step's target
// state when that many did (Then) or when that many no longer can (Else).
type Join struct {
	Policy JoinPolicy
	N      int // at_least: the number of branches (fan-out: commands) that must succeed; 0 otherwise
	Then   Name
	Else   Name
	Pos    Pos
}

// JoinPolicy says how many branches of a parallel step must succeed.
type JoinPolicy string

// Join policies.
const (
	JoinAll     JoinPolicy = "all"      // every branch (every command of a fan-out)
	JoinFirst   JoinPolicy = "first"    // the first to succeed; the others' effects are undone when they answer
	JoinAtLeast JoinPolicy = "at_least" // Join.N of them
)

// Event is the data contract of one event (the `events:` section).
type Event struct {
	Name        string
	Description string
	Schema      *Schema // nil: the payload is not checked against a schema
	// Writes lists the top-level context keys the event's payload may
	// write; nil when the file does not say (then any key no other
	// participant's event declares).
	Writes []Name
	Pos    Pos
}

// Mapping builds a command's payload from the saga's context, instead of
// sending the whole context: either one expression giving an object (Expr)
// or one expression per key (Fields, in file order; a field may nest).
type Mapping struct {
	Expr   *Expr
	Fields []*MappingField
	Pos    Pos
}

// MappingField is one key of a mapping: its value is an expression or a
// nested mapping.
type MappingField struct {
	Key    string
	Expr   *Expr    // nil when Nested is set
	Nested *Mapping // nil when Expr is set
	Pos    Pos
}

// Starts reports whether the transition starts a new saga (`from: []`).
func (t *Transition) Starts() bool { return len(t.From) == 0 }

// Send is the command a transition sends to a participant.
type Send struct {
	To         Name
	Command    Name
	Retry      *Retry        // nil: sent once, no re-send; a branch's retry has no Exhausted (the branch fails)
	Compensate *Compensation // undoes what Command did (or may have done); nil if none
	Payload    *Mapping      // builds the command's payload; nil: the whole saga context
	Pos        Pos
	// NoEffects is `effects: none` (a single send only): the participant
	// commits nothing for the command (a read or a check), so an answer
	// that comes after the saga stopped waiting for it is recorded in the
	// timeline as late, not parked as a dead letter.
	NoEffects bool

	// A branch of a parallel step only:
	OK      Name  // the participant's reply when the branch succeeded
	Fail    Name  // its reply when the branch failed; zero when it has none
	ForEach *Expr // fan-out: one command per element of this list (the payload sees item and index); nil for one command
}

// Compensation undoes an effect when the saga fails: saga-machine sends
// Command to participant To, which answers Done once the effect is undone
// (or when there was nothing to undo). A transition's compensation undoes
// what its By did before emitting On; a send's compensation undoes what the
// command did, or may have done, from the moment it was sent. When a saga
// enters a failed state, the compensations of its steps run one at a time,
// newest first (see docs/definition-language.md).
type Compensation struct {
	To      Name   // who undoes; when the file does not say: the transition's by, or the send's to
	Command Name   // the undoing command
	Done    Name   // the event To answers when the undo is done
	Retry   *Retry // nil: the default policy (DefaultCompensationRetry); Exhausted is never set
	Pos     Pos

	toWritten bool // To was written in the file (not the default)
}

// DefaultCompensationRetry is the re-send policy of a compensation that
// gives none: 10 sends in all, waiting 1s, then twice as long each time up to
// 1m. A compensation never gives up into an event: past its attempts the
// saga stops as compensation_failed for an operator.
func DefaultCompensationRetry() *Retry {
	return &Retry{Attempts: 10, Backoff: time.Second, MaxBackoff: time.Minute}
}

// Retry re-sends a command while the saga waits in the target state for an
// answer: after Backoff, then doubling up to MaxBackoff, at most Attempts
// sends in all (the first send included); then the engine raises Exhausted.
type Retry struct {
	Attempts   int
	Backoff    time.Duration
	MaxBackoff time.Duration
	Exhausted  Name
	Pos        Pos
}
