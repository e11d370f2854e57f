package definition

import (
	"fmt"
	"io"
	"sort"
	"unicode/utf8"

	"gopkg.in/yaml.v3"
)

// Limits of one definition file. They protect every reader of definitions
// (saga-machine at start-up, sagactl, the validate endpoint of the HTTP API)
// against hostile or accidental giants: parsing, validating and compiling a
// file within these limits takes time and memory roughly proportional to its
// size. A file beyond a limit is refused with a problem naming the limit.
// Real sagas are far below them: MANUAL_CREATE_ORDER has 5 states, 7
// transitions and about 400 YAML nodes in 3.5 KB.
const (
	// MaxFileBytes is the largest definition file (1 MiB).
	MaxFileBytes = 1 << 20
	// MaxNodes is the most YAML nodes (every key, value and list item) a
	// file may hold, each alias counted as the nodes it stands for.
	MaxNodes = 400_000
	// MaxAliasNodes is the most YAML nodes one alias (*name) may stand
	// for: enough for a retry policy, a send or a list of states, not for
	// whole sections copied many times.
	MaxAliasNodes = 100
	// MaxStates is the most states of one saga.
	MaxStates = 10_000
	// MaxTransitions is the most transitions (rows) of one saga.
	MaxTransitions = 10_000
	// MaxEdges is the most (state, event) pairs a saga accepts: the from
	// lists of all transitions together (a starting transition counts one).
	MaxEdges = 50_000
	// MaxParticipants is the most participants of one saga.
	MaxParticipants = 1_000
	// MaxKeys is the most business keys of one saga (the engine extracts
	// every key from the saga's context at every step).
	MaxKeys = 100
	// MaxNameBytes is the longest name (saga, state, event, command,
	// participant, key, role).
	MaxNameBytes = 128
	// MaxExpressions is the most expressions (conditions, payload
	// mappings and their fields, for_each lists) of one saga: compiling
	// one takes about 0.2 ms.
	MaxExpressions = 2_000
	// MaxBranches is the most branches of one parallel step (a fan-out
	// with for_each is one branch, whatever its list's length).
	MaxBranches = 100
	// MaxSchemaBytes is the largest schema file an event's contract may
	// name; all the schema files of one definition together are at most
	// MaxFileBytes.
	MaxSchemaBytes = 256 << 10
	// MaxProblems is the most problems reported for one file; when there
	// are more, a last problem with rule too-many-problems says how many
	// were left out.
	MaxProblems = 100
	// MaxMessageBytes is the longest problem message; longer ones (which
	// quote long values from the file) are cut and end with "…".
	MaxMessageBytes = 512
)

// Rule ids of the limits.
const (
	ruleFileTooLarge        = "file-too-large"
	ruleTooManyNodes        = "too-many-nodes"
	ruleAliasTooBig         = "alias-too-big"
	ruleAliasCycle          = "alias-cycle"
	ruleTooManyStates       = "too-many-states"
	ruleTooManyTransitions  = "too-many-transitions"
	ruleTooManyEdges        = "too-many-edges"
	ruleTooManyParticipants = "too-many-participants"
	ruleTooManyKeys         = "too-many-keys"
	ruleTooManyProblems     = "too-many-problems"
	ruleTooManyExpressions  = "too-many-expressions"
	ruleTooManyBranches     = "too-many-branches"
)

// suggestCells bounds the work of "did you mean" suggestions in one file
// (edit-distance cells computed); past it, problems come without a
// suggestion.
const suggestCells = 2_000_000

// ReadAll reads a definition file from r, but never more than
// MaxFileBytes+1 bytes: enough for Parse to refuse a larger file with a
// file-too-large problem without holding all of it in memory.
func ReadAll(r io.Reader) ([]byte, error) {
	data, err := io.ReadAll(io.LimitReader(r, MaxFileBytes+1))
	if err != nil {
		return nil, fmt.Errorf("read the definition: %w", err)
	}
	return data, nil
}

// measure walks the document once, in file order, and counts its nodes,
// each alias as the nodes of the node it names (remembered per anchor, so
// the walk is linear in the size of the document, not of its expansion).
// It reports aliases that stand for more than MaxAliasNodes nodes, aliases
// inside the node they name, and the node where the count passes
// MaxNodes. It returns false when the document breaks one of these limits:
// it is then not read any further.
func (p *parser) measure(root *yaml.Node) bool {
	m := &measurer{p: p, anchored: map[*yaml.Node]int{}}
	m.visit(root)
	return !m.failed
}

type measurer struct {
	p        *parser
	anchored map[*yaml.Node]int // expanded size of every anchored node visited completely
	total    int                // nodes so far, saturating at MaxNodes+1
	failed   bool
}

func (m *measurer) count(n int, at *yaml.Node) {
	if m.total > MaxNodes {
		return
	}
	m.total += n
	if m.total > MaxNodes {
		m.failed = true
		m.p.addAt(at, ruleTooManyNodes, "the definition has more than %d YAML nodes (keys, values and list items, each alias counted as what it stands for) by here: split the saga, or write fewer aliases", MaxNodes)
	}
}

// visit counts n and returns its expanded size (saturating at MaxNodes+1).
func (m *measurer) visit(n *yaml.Node) int {
	if n == nil {
		return 0
	}
	if n.Kind == yaml.AliasNode {
		size, done := m.anchored[n.Alias]
		switch {
		case !done:
			m.failed = true
			m.p.addAt(n, ruleAliasCycle, "the alias *%s stands for a node that contains the alias itself: write the value out", clip(n.Value))
			return 0
		case size > MaxAliasNodes:
			m.failed = true
			m.p.addAt(n, ruleAliasTooBig, "the alias *%s stands for %s YAML nodes; an alias may stand for at most %d (a retry policy, a send, a list of states): write the value out", clip(n.Value), atLeast(size), MaxAliasNodes)
		}
		m.count(size, n)
		return size
	}
	m.count(1, n)
	size := 1
	for _, c := range n.Content {
		size = min(size+m.visit(c), MaxNodes+1)
	}
	if n.Anchor != "" {
		m.anchored[n] = size
	}
	return size
}

func atLeast(size int) string {
	if size > MaxNodes {
		return fmt.Sprintf("more than %d", MaxNodes)
	}
	return fmt.Sprint(size)
}

// clip shortens a value quoted in a message to at most 64 bytes.
func clip(s string) string {
	const max = 64
	if len(s) <= max {
		return s
	}
	return cutUTF8(s, max-len("…")) + "…"
}

// cutUTF8 returns at most n bytes of s, never splitting a character.
func cutUTF8(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

// tooManyAt reports a limit of count items at the first item past it.
func (p *parser) tooMany(at *yaml.Node, rule string, limit int, what string) {
	p.limited = true
	p.addAt(at, rule, "the saga has more than %d %s: this is where the %d%s one starts; split the saga", limit, what, limit+1, ordinalSuffix(limit+1))
}

func ordinalSuffix(n int) string {
	if n%100 >= 11 && n%100 <= 13 {
		return "th"
	}
	switch n % 10 {
	case 1:
		return "st"
	case 2:
		return "nd"
	case 3:
		return "rd"
	}
	return "th"
}

// checkStateCount refuses a saga with more than MaxStates states, at the
// first mention of the state past the limit.
func (p *parser) checkStateCount(def *Definition) {
	if len(def.States) <= MaxStates {
		return
	}
	states := make([]*State, 0, len(def.States))
	for _, st := range def.States {
		states = append(states, st)
	}
	sort.Slice(states, func(i, j int) bool {
		if states[i].Pos != states[j].Pos {
			return before(states[i].Pos, states[j].Pos)
		}
		return states[i].Name < states[j].Name
	})
	p.limited = true
	p.add(states[MaxStates].Pos, ruleTooManyStates, "the saga has more than %d states: %s is the %d%s; split the saga", MaxStates, clip(states[MaxStates].Name), MaxStates+1, ordinalSuffix(MaxStates+1))
}

// keep bounds the problems held while parsing: it keeps the first
// MaxProblems+1 in sorted order (the extra one positions the
// too-many-problems summary) and counts the others.
func (p *parser) keep() {
	if len(p.problems) < 4*MaxProblems {
		return
	}
	sortProblems(p.problems)
	p.problems = p.problems[:MaxProblems+1]
}

// summarise sorts the problems and, when there are more than MaxProblems,
// keeps the first MaxProblems and adds one too-many-problems problem at the
// position of the first one left out.
func (p *parser) summarise() Problems {
	sortProblems(p.problems)
	if p.count <= MaxProblems {
		return p.problems
	}
	next := p.problems[MaxProblems]
	out := p.problems[:MaxProblems:MaxProblems]
	return append(out, Problem{
		File: next.File, Line: next.Line, Col: next.Col, Rule: ruleTooManyProblems,
		Message: fmt.Sprintf("… and %d more problems from here on (only the first %d are listed): fix these and validate again", p.count-MaxProblems, MaxProblems),
	})
}
