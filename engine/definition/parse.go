package definition

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"regexp"
	"sort"
	"strconv"

	"gopkg.in/yaml.v3"
)

// Parse reads one definition file's bytes, checks it against every rule of the
// language and returns the Definition, or every problem found (sorted). It
// never panics, whatever the input. name is used as FILE in problems.
//
// When the returned Problems is empty the Definition is complete and valid;
// otherwise the Definition is nil. Every problem points at the YAML node that
// causes it and carries a stable Rule id (see docs/definition-language.md).
//
// Parse enforces the limits (MaxFileBytes, MaxNodes, MaxAliasNodes,
// MaxStates, MaxTransitions, ...) before anything else and reports at most
// MaxProblems problems (plus one too-many-problems line), so that its time
// and memory stay roughly proportional to len(data) whatever the input.
func Parse(name string, data []byte) (*Definition, Problems) {
	return ParseWith(name, data, Options{})
}

// Options are what ParseWith needs besides the file's bytes.
type Options struct {
	// Files is the directory of the definition file: the schema files an
	// event's contract names (schema: schemas/x.json) are read from it.
	// nil: only schemas written inline are accepted, a schema file is a
	// problem (rule schema-file).
	Files fs.FS
}

// ParseWith is Parse with options: the directory schema files are read
// from. Reading them is bounded too (MaxSchemaBytes per file, MaxFileBytes
// for all of a definition's schema files).
func ParseWith(name string, data []byte, opts Options) (*Definition, Problems) {
	p := &parser{file: name, suggestBudget: suggestCells, src: data, files: opts.Files}
	if len(data) > MaxFileBytes {
		p.add(Pos{Line: 1, Col: 1}, ruleFileTooLarge, "the file is larger than %d bytes (1 MiB): a saga definition is a few kilobytes; split the saga", MaxFileBytes)
		return nil, p.sorted()
	}
	root := p.decode(data)
	if root == nil || !p.measure(root) {
		return nil, p.sorted()
	}
	def := p.definition(root)
	if def != nil && !p.limited {
		p.check(def)
	}
	if len(p.problems) > 0 {
		return nil, p.sorted()
	}
	return def, nil
}

// parser collects the problems of one file while it walks the YAML tree.
type parser struct {
	file     string
	problems Problems // at most a few times MaxProblems, see keep
	count    int      // problems found, including those no longer held

	limited       bool // a count limit (states, transitions, ...) was passed: no semantic checks
	suggestBudget int  // edit-distance cells left for "did you mean" suggestions

	src         []byte          // the file, for positions inside block-scalar expressions
	lineStarts  []int           // byte offset of every line of src, computed when first needed
	files       fs.FS           // the definition's directory, for schema files; nil: none
	exprs       int             // expressions compiled so far (MaxExpressions)
	schemaBytes int             // bytes of schema files read so far
	schemas     map[any]*Schema // compiled schemas by YAML node (inline) or path (file)

	// What the semantic checks need to know about the structure.
	transitionsNode  *yaml.Node // the `transitions:` value, for no-start
	participantsOK   bool       // participants parsed, so names can be checked against them
	transitionsOK    bool       // every transition parsed completely
	terminalsOK      bool       // final (and failed, if present) parsed
	statesOK         bool       // the states section parsed
	onlyDeclared     map[string]bool
	declaredInStates map[string]bool
}

// Problem rule ids. They are stable: tools and tests match on them.
const (
	ruleEmptyFile         = "empty-file"
	ruleYAMLSyntax        = "yaml-syntax"
	ruleMultipleDocuments = "multiple-documents"
	ruleUnsupportedYAML   = "unsupported-yaml"
	ruleWrongType         = "wrong-type"
	ruleUnknownKey        = "unknown-key"
	ruleDuplicateKey      = "duplicate-key"
	ruleMissingKey        = "missing-key"
	ruleDuplicateEntry    = "duplicate-entry"
	ruleBadName           = "bad-name"
	ruleBadVersion        = "bad-version"
	ruleBadTopic          = "bad-topic"
	ruleDuplicateTopic    = "duplicate-topic"
	ruleBadKeyPath        = "bad-key-path"
	ruleBadDuration       = "bad-duration"
	ruleTimeoutRange      = "timeout-range"
	ruleRetryRange        = "retry-range"
	ruleReserved          = "reserved-participant"
	ruleUndeclared        = "undeclared-participant"
	ruleUnusedParticipant = "unused-participant"
	ruleSendToEngine      = "send-to-engine"
	ruleSendToAPI         = "send-to-api"
	ruleAPINotStart       = "api-not-start"
	ruleAPIRoles          = "api-without-roles"
	ruleRolesWithoutAPI   = "roles-without-api"

	ruleCompensateExhausted  = "compensate-exhausted"
	ruleCompensateToReserved = "compensate-to-reserved"
	ruleCompensateByReserved = "compensate-by-reserved"
	ruleCompensateSame       = "compensate-same-command"
	ruleEffects              = "effects"
	ruleCompensateNeverRuns  = "compensate-never-runs"
	ruleCompensateNoFailed   = "compensate-without-failed"
	ruleDoneIsEvent          = "done-is-event"
	ruleDoneReused           = "done-reused"
	ruleReservedEvent        = "reserved-event"
	ruleNoStart              = "no-start"
	ruleEngineStart          = "engine-start"
	ruleNondeterministic     = "nondeterministic"
	ruleUnreachable          = "unreachable-state"
	ruleDeadEnd              = "dead-end"
	ruleCannotFinish         = "cannot-finish"
	ruleFinalHasExit         = "final-has-exit"
	ruleFinalAndFailed       = "final-and-failed"
	ruleNoFinal              = "no-final"
	ruleUnusedState          = "unused-state"
	ruleTerminalTimeout      = "terminal-timeout"
	ruleUnhandledEvent       = "unhandled-event"
	ruleNeverRaised          = "never-raised"
	ruleAbortNotFailed       = "abort-not-failed"
	ruleRetryToTerminal      = "retry-to-terminal"
	ruleDuplicateSaga        = "duplicate-definition"

	ruleBadExpression        = "bad-expression"
	ruleDecisionNoDefault    = "decision-without-default"
	ruleDecisionBy           = "decision-by-differs"
	ruleDuplicateCondition   = "duplicate-condition"
	ruleJoinWithoutBranches  = "join-without-branches"
	ruleBranchesWithoutJoin  = "branches-without-join"
	ruleBranchOnly           = "branch-only"
	ruleBranchExhausted      = "branch-exhausted"
	ruleJoinPolicy           = "join-policy"
	ruleBranchReply          = "branch-reply-ambiguous"
	ruleBranchReplyIsEvent   = "branch-reply-is-event"
	ruleJoinStateShared      = "join-state-shared"
	ruleParallelToTerminal   = "parallel-to-terminal"
	ruleBadSchema            = "bad-schema"
	ruleSchemaFile           = "schema-file"
	ruleContractUnknownEvent = "contract-unknown-event"
	ruleContractEngineEvent  = "contract-engine-event"
	ruleWritesShared         = "writes-shared"
	ruleReadError            = "read-error"
	ruleNoDefinitions        = "no-definitions"
)

func (p *parser) add(pos Pos, rule, format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	if len(msg) > MaxMessageBytes {
		msg = cutUTF8(msg, MaxMessageBytes-len("…")) + "…"
	}
	p.count++
	p.problems = append(p.problems, Problem{File: p.file, Line: pos.Line, Col: pos.Col, Rule: rule, Message: msg})
	p.keep()
}

func (p *parser) addAt(n *yaml.Node, rule, format string, args ...any) {
	p.add(posOf(n), rule, format, args...)
}

// sorted returns the problems in order, at most MaxProblems of them and a
// summary of the rest.
func (p *parser) sorted() Problems { return p.summarise() }

func sortProblems(ps Problems) {
	sort.SliceStable(ps, func(i, j int) bool {
		a, b := ps[i], ps[j]
		if a.File != b.File {
			return a.File < b.File
		}
		if a.Line != b.Line {
			return a.Line < b.Line
		}
		if a.Col != b.Col {
			return a.Col < b.Col
		}
		if a.Message != b.Message {
			return a.Message < b.Message
		}
		return a.Rule < b.Rule
	})
}

func posOf(n *yaml.Node) Pos {
	if n == nil {
		return Pos{}
	}
	return Pos{Line: n.Line, Col: n.Column}
}

// yaml.v3 reports syntax errors as "yaml: line N: message" (sometimes with
// a column, never with one in v3.0.1, but be ready for it).
var syntaxErr = regexp.MustCompile(`^yaml: (?:line (\d+): )?(?:column (\d+): )?(.*)$`)

func (p *parser) syntax(err error) {
	pos := Pos{Line: 1, Col: 1}
	msg := err.Error()
	if m := syntaxErr.FindStringSubmatch(msg); m != nil {
		msg = m[3]
		if l, e := strconv.Atoi(m[1]); e == nil && l > 0 {
			pos.Line = l
			if parserProblems[msg] != "" {
				// yaml.v3 reports parser (not scanner) errors with a
				// 0-based line number; they point at where the broken
				// construct starts.
				pos.Line++
			}
		}
		if c, e := strconv.Atoi(m[2]); e == nil && c > 0 {
			pos.Col = c
		}
	}
	if hint := parserProblems[msg]; hint != "" && hint != "-" {
		msg += " (" + hint + ")"
	}
	p.add(pos, ruleYAMLSyntax, "YAML syntax error: %s", msg)
}

// parserProblems are the messages of yaml.v3's parser (as opposed to its
// scanner), with a hint for an analyst where one helps ("-": no hint).
var parserProblems = map[string]string{
	"did not find expected ',' or ']'":       "a [ list opened on this line is not closed with ], or two items lack a comma between them",
	"did not find expected ',' or '}'":       "a { mapping opened on this line is not closed with }, or two entries lack a comma between them",
	"did not find expected '-' indicator":    "a list item here is indented differently from the others",
	"did not find expected key":              "a line here is indented differently from the keys around it",
	"did not find expected node content":     "a value is missing, e.g. an unclosed [ or {",
	"did not find expected <document start>": "-",
	"did not find expected <stream-start>":   "-",
	"found duplicate %TAG directive":         "-",
	"found duplicate %YAML directive":        "-",
	"found incompatible YAML document":       "-",
	"found undefined tag handle":             "-",
}

// decodeSafely runs the YAML decoder and turns a panic inside the YAML
// library into an error, so that Parse keeps its promise never to panic.
func decodeSafely(dec *yaml.Decoder, n *yaml.Node) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("yaml: the YAML reader failed on this input: %v", r)
		}
	}()
	return dec.Decode(n)
}

// decode reads the one YAML document of the file and returns its root node,
// or nil when there is nothing to check.
func (p *parser) decode(data []byte) *yaml.Node {
	first := Pos{Line: 1, Col: 1}
	if len(bytes.TrimSpace(data)) == 0 {
		p.add(first, ruleEmptyFile, "the file is empty: a saga definition needs at least saga, version, participants, transitions and final")
		return nil
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := decodeSafely(dec, &doc); err != nil {
		if errors.Is(err, io.EOF) {
			p.add(first, ruleEmptyFile, "the file holds only comments: a saga definition needs at least saga, version, participants, transitions and final")
		} else {
			p.syntax(err)
		}
		return nil
	}
	var next yaml.Node
	switch err := decodeSafely(dec, &next); {
	case err == nil:
		at := &next
		if len(next.Content) > 0 {
			at = next.Content[0]
		}
		p.addAt(at, ruleMultipleDocuments, "a second YAML document starts here (after ---): put each saga definition in its own file")
	case errors.Is(err, io.EOF):
	default:
		p.syntax(err)
	}
	if doc.Kind != yaml.DocumentNode || len(doc.Content) != 1 || doc.Content[0] == nil {
		p.add(first, ruleEmptyFile, "the file holds no YAML content")
		return nil
	}
	return doc.Content[0]
}
