package expr

import (
	"errors"
	"fmt"
	"strings"
	"sync"

	"cel.dev/cel-go/cel"
	"cel.dev/cel-go/common/types"
	"cel.dev/cel-go/common/types/ref"
)

// Limits of one expression.
const (
	// MaxBytes is the longest expression text.
	MaxBytes = 4096
	// MaxNodes is the most syntax nodes of one expression, macros expanded.
	MaxNodes = 2000
	// MaxDepth is the deepest nesting of one expression.
	MaxDepth = 32
	// MaxCost is the most CEL runtime cost one evaluation may spend (about
	// one unit per operation, plus one per 10 bytes or list elements a
	// function touches); past it the evaluation stops with an error.
	// A saga's condition or mapping needs tens to a few thousand (a
	// condition over a 100-element list: about 500); at the limit one
	// evaluation takes about 10 ms of CPU (BenchmarkCostLimit). Kubernetes
	// allows one validation rule ten times as much, at admission only.
	MaxCost = 100_000
	// MaxResultBytes is the largest JSON a mapping may produce.
	MaxResultBytes = 256 << 10
)

// Kind is what an expression is for: which variables it sees and what it
// must give.
type Kind int

// Kinds of expressions.
const (
	// Condition is a decision's `when:`: event, context and saga; gives a bool.
	Condition Kind = iota + 1
	// Value is a payload mapping (`payload:` or one of its fields) and a
	// migration's context transform: context and saga; gives any JSON value
	// (a whole payload or a context must be a map, see Compile).
	Value
	// ItemValue is a payload mapping of a branch that fans out (`for_each:`):
	// context, saga, item and index.
	ItemValue
	// List is a branch's `for_each:`: context and saga; gives a list.
	List
)

// String names the kind as the language does.
func (k Kind) String() string {
	switch k {
	case Condition:
		return "condition"
	case Value:
		return "mapping"
	case ItemValue:
		return "for_each mapping"
	case List:
		return "for_each list"
	}
	return fmt.Sprintf("kind %d", int(k))
}

// Variables of the expressions.
const (
	VarEvent   = "event"
	VarContext = "context"
	VarSaga    = "saga"
	VarItem    = "item"
	VarIndex   = "index"
)

// Vars lists the variables an expression of kind k sees.
func (k Kind) Vars() []string {
	switch k {
	case Condition:
		return []string{VarEvent, VarContext, VarSaga}
	case ItemValue:
		return []string{VarContext, VarSaga, VarItem, VarIndex}
	}
	return []string{VarContext, VarSaga}
}

var (
	envOnce sync.Once
	envs    map[Kind]*cel.Env
	envErr  error
)

// env returns the CEL environment of kind k, built once: CEL's standard
// library only, heterogeneous numeric comparisons, and the parser limits.
func env(k Kind) (*cel.Env, error) {
	envOnce.Do(func() {
		object := cel.MapType(cel.StringType, cel.DynType)
		base := []cel.EnvOption{
			cel.CrossTypeNumericComparisons(true),
			cel.ParserExpressionSizeLimit(MaxBytes),
			cel.ParserRecursionLimit(MaxDepth),
			cel.ExpressionNodeLimit(MaxNodes),
			cel.RegexProgramSizeLimit(200),
		}
		decl := map[string]cel.EnvOption{
			VarEvent:   cel.Variable(VarEvent, object),
			VarContext: cel.Variable(VarContext, object),
			VarSaga:    cel.Variable(VarSaga, object),
			VarItem:    cel.Variable(VarItem, cel.DynType),
			VarIndex:   cel.Variable(VarIndex, cel.IntType),
		}
		envs = map[Kind]*cel.Env{}
		for _, k := range []Kind{Condition, Value, ItemValue, List} {
			opts := append([]cel.EnvOption(nil), base...)
			for _, v := range k.Vars() {
				opts = append(opts, decl[v])
			}
			e, err := cel.NewEnv(opts...)
			if err != nil {
				envErr = fmt.Errorf("build the CEL environment for %s: %w", k, err)
				return
			}
			envs[k] = e
		}
	})
	if envErr != nil {
		return nil, envErr
	}
	return envs[k], nil
}

// Issue is one problem of an expression. Line and Col are 1-based and count
// within the expression text (Col in characters); 0 when CEL gives no
// position.
type Issue struct {
	Line, Col int
	Message   string
}

// Program is a compiled expression. It is immutable and safe for
// concurrent use.
type Program struct {
	text string
	kind Kind
	prg  cel.Program
}

// Text is the expression as written.
func (p *Program) Text() string { return p.text }

// Kind is what the expression is for.
func (p *Program) Kind() Kind { return p.kind }

// Compile parses and type-checks text as an expression of kind k and plans
// its evaluation with the cost limit. It returns the problems found (the
// Program is then nil). wantObject asks that the result be a map (a whole
// command payload or a migrated context), which is checked here when CEL
// knows the type and at every evaluation otherwise.
func Compile(k Kind, text string, wantObject bool) (*Program, []Issue) {
	if len(text) > MaxBytes {
		return nil, []Issue{{Line: 1, Col: 1, Message: fmt.Sprintf("the expression is %d bytes long: an expression has at most %d; move the logic to a participant", len(text), MaxBytes)}}
	}
	if strings.TrimSpace(text) == "" {
		return nil, []Issue{{Line: 1, Col: 1, Message: "the expression is empty"}}
	}
	e, err := env(k)
	if err != nil {
		return nil, []Issue{{Message: err.Error()}}
	}
	ast, iss := e.Compile(text)
	if iss.Err() != nil {
		return nil, issues(k, iss.Errors())
	}
	out := ast.OutputType()
	if msg := checkOutput(k, out, wantObject); msg != "" {
		return nil, []Issue{{Line: 1, Col: 1, Message: msg}}
	}
	prg, err := e.Program(ast, cel.CostLimit(MaxCost))
	if err != nil {
		return nil, []Issue{{Line: 1, Col: 1, Message: "cannot plan the expression: " + err.Error()}}
	}
	return &Program{text: text, kind: k, prg: prg}, nil
}

// checkOutput explains why an expression of kind k giving type out cannot
// be right, or returns "".
func checkOutput(k Kind, out *cel.Type, wantObject bool) string {
	if out == nil || out.Kind() == types.DynKind || out.Kind() == types.AnyKind {
		return ""
	}
	switch {
	case k == Condition && out.Kind() != types.BoolKind:
		return fmt.Sprintf("a condition must be true or false, but this expression gives %s; compare something, e.g. event.amount > 1000", typeName(out))
	case k == List && out.Kind() != types.ListKind:
		return fmt.Sprintf("for_each must give a list, but this expression gives %s; e.g. context.order.lines", typeName(out))
	case wantObject && out.Kind() != types.MapKind:
		return fmt.Sprintf("this expression gives %s, but a payload or context must be an object (a map): write {\"key\": value, ...} or map the keys one by one", typeName(out))
	}
	return ""
}

func typeName(t *cel.Type) string {
	switch t.Kind() {
	case types.BoolKind:
		return "a bool"
	case types.IntKind:
		return "an int"
	case types.UintKind:
		return "a uint"
	case types.DoubleKind:
		return "a double"
	case types.StringKind:
		return "a string"
	case types.BytesKind:
		return "bytes"
	case types.ListKind:
		return "a list"
	case types.MapKind:
		return "a map"
	case types.NullTypeKind:
		return "null"
	}
	return t.String()
}

// issues turns CEL's errors into Issues, with a hint for the variables a
// kind does not see.
func issues(k Kind, errs []*cel.Error) []Issue {
	out := make([]Issue, 0, len(errs))
	for _, e := range errs {
		is := Issue{Message: syntaxHint(e.Message)}
		if loc := e.Location; loc != nil && loc.Line() > 0 {
			is.Line, is.Col = loc.Line(), loc.Column()+1
		}
		if name, ok := undeclared(e.Message); ok {
			is.Message = fmt.Sprintf("unknown name %s: a %s sees only %s", name, k, strings.Join(k.Vars(), ", "))
			if name == VarEvent {
				is.Message += " (the event's payload is already merged into context when the command is built)"
			}
		}
		out = append(out, is)
	}
	return out
}

// syntaxHint shortens the parser's messages that list every token it
// expected.
func syntaxHint(msg string) string {
	if strings.HasPrefix(msg, "Syntax error: mismatched input '<EOF>'") {
		return "Syntax error: the expression ends too early (something is missing at its end)"
	}
	if i := strings.Index(msg, " expecting {"); i > 0 {
		return msg[:i]
	}
	return msg
}

// undeclared reads the name out of CEL's "undeclared reference to 'x' (in
// container ”)".
func undeclared(msg string) (string, bool) {
	const prefix = "undeclared reference to '"
	rest, ok := strings.CutPrefix(msg, prefix)
	if !ok {
		return "", false
	}
	name, _, ok := strings.Cut(rest, "'")
	return name, ok
}

// Input is what an evaluation sees. Event and Context are decoded JSON
// objects (see Decode); nil stands for {}.
type Input struct {
	Event   map[string]any
	Context map[string]any
	Saga    Saga
	Item    any // the element of a for_each list
	Index   int // its position
}

// Saga is the `saga` variable: which instance the expression runs for.
type Saga struct {
	ID      string
	Name    string
	Version int
}

var emptyObject = map[string]any{}

// vars builds the activation of p's kind from in.
func (p *Program) vars(in Input) map[string]any {
	obj := func(m map[string]any) map[string]any {
		if m == nil {
			return emptyObject
		}
		return m
	}
	v := map[string]any{
		VarContext: obj(in.Context),
		VarSaga:    map[string]any{"id": in.Saga.ID, "name": in.Saga.Name, "version": int64(in.Saga.Version)},
	}
	switch p.kind {
	case Condition:
		v[VarEvent] = obj(in.Event)
	case ItemValue:
		v[VarItem] = in.Item
		v[VarIndex] = int64(in.Index)
	}
	return v
}

// ErrCost is wrapped by the error of an evaluation that passed MaxCost.
var ErrCost = errors.New("the expression costs more than the limit")

// eval runs p on in.
func (p *Program) eval(in Input) (ref.Val, error) {
	out, _, err := p.prg.Eval(p.vars(in))
	if err != nil {
		if strings.Contains(err.Error(), "cost limit exceeded") {
			return nil, fmt.Errorf("evaluate %s: %w (%d)", p.kind, ErrCost, MaxCost)
		}
		return nil, fmt.Errorf("evaluate %s: %w", p.kind, err)
	}
	return out, nil
}

// Bool evaluates a condition.
func (p *Program) Bool(in Input) (bool, error) {
	out, err := p.eval(in)
	if err != nil {
		return false, err
	}
	b, ok := out.(types.Bool)
	if !ok {
		return false, fmt.Errorf("evaluate condition: it gave %s, not true or false", out.Type().TypeName())
	}
	return bool(b), nil
}

// Value evaluates p and returns its result as a JSON-ready Go value:
// map[string]any, []any, string, bool, int64, uint64, float64 or nil.
func (p *Program) Value(in Input) (any, error) {
	out, err := p.eval(in)
	if err != nil {
		return nil, err
	}
	v, err := native(out, 0)
	if err != nil {
		return nil, fmt.Errorf("evaluate %s: %w", p.kind, err)
	}
	return v, nil
}

// List evaluates a for_each expression and returns its elements.
func (p *Program) List(in Input) ([]any, error) {
	v, err := p.Value(in)
	if err != nil {
		return nil, err
	}
	l, ok := v.([]any)
	if !ok {
		return nil, fmt.Errorf("evaluate for_each: it gave %s, not a list", jsonKind(v))
	}
	return l, nil
}
