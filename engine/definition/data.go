package definition

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path"
	"regexp"
	"sort"
	"strings"
	"unicode/utf8"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"gopkg.in/yaml.v3"

	"github.com/portfolio-counselor/sagamachine/engine/expr"
)

// contextKey is how the top-level keys of a saga context (writes:) may be
// written: what JSON payloads use in practice (deal_context, notificationDTO).
var contextKey = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_-]*$`)

// expression compiles the scalar n as a CEL expression of kind k, reporting
// every problem at its position in the file. It returns nil when the
// expression cannot be used (the problem is reported).
func (p *parser) expression(n *yaml.Node, k expr.Kind, object bool, what string) *Expr {
	r := resolve(n)
	if r == nil || r.Kind != yaml.ScalarNode || isNull(r) {
		p.wrongType(n, what+" written as text, e.g. event.amount > 1000")
		return nil
	}
	text := r.Value
	if r.ShortTag() != "!!str" {
		// 5, 2.5 and true are CEL literals too (a constant in a mapping).
		text = strings.TrimSpace(r.Value)
	}
	p.exprs++
	if p.exprs > MaxExpressions {
		if p.exprs == MaxExpressions+1 {
			p.limited = true
			p.addAt(n, ruleTooManyExpressions, "the saga has more than %d expressions (conditions, mappings, for_each): this is the %d%s; split the saga", MaxExpressions, MaxExpressions+1, ordinalSuffix(MaxExpressions+1))
		}
		return nil
	}
	prg, issues := expr.Compile(k, text, object)
	for _, is := range issues {
		p.add(p.exprPos(n, r, is), ruleBadExpression, "%s: %s", what, is.Message)
	}
	if prg == nil {
		return nil
	}
	return &Expr{Text: text, Program: prg, Pos: posOf(n)}
}

// exprPos is the position in the file of an issue inside the expression
// written at n (r is n resolved): exact for expressions on one line and
// for literal blocks (|), the start of the expression otherwise.
func (p *parser) exprPos(n, r *yaml.Node, is expr.Issue) Pos {
	at := posOf(n)
	if is.Line == 0 || n.Kind == yaml.AliasNode {
		return at
	}
	switch r.Style {
	case yaml.LiteralStyle, yaml.FoldedStyle:
		// The text starts on the line after the | or >, indented.
		// Every line is indented at least as much as the first one, which
		// YAML strips from all of them.
		line := at.Line + is.Line
		if r.Style == yaml.FoldedStyle {
			line = at.Line + 1
		}
		return Pos{Line: line, Col: p.indent(at.Line+1) + is.Col}
	case yaml.DoubleQuotedStyle, yaml.SingleQuotedStyle:
		if is.Line == 1 {
			return Pos{Line: at.Line, Col: at.Col + is.Col}
		}
	default:
		if is.Line == 1 {
			return Pos{Line: at.Line, Col: at.Col + is.Col - 1}
		}
	}
	return at
}

// indent is the number of spaces that start line (1-based) of the file.
func (p *parser) indent(line int) int {
	if p.lineStarts == nil {
		p.lineStarts = []int{0}
		for i, c := range p.src {
			if c == '\n' {
				p.lineStarts = append(p.lineStarts, i+1)
			}
		}
	}
	if line < 1 || line > len(p.lineStarts) {
		return 0
	}
	n := 0
	for i := p.lineStarts[line-1]; i < len(p.src) && p.src[i] == ' '; i++ {
		n++
	}
	return n
}

// mapping reads a command's payload mapping: one expression giving an
// object, or a mapping of keys to expressions (nested at most
// maxMappingDepth deep).
func (p *parser) mapping(n *yaml.Node, k expr.Kind, depth int) *Mapping {
	r := resolve(n)
	m := &Mapping{Pos: posOf(n)}
	if r != nil && r.Kind == yaml.ScalarNode && r.ShortTag() == "!!str" {
		if depth > 0 {
			m.Expr = p.expression(n, k, false, "a mapping")
		} else {
			m.Expr = p.expression(n, k, true, "a payload mapping")
		}
		if m.Expr == nil {
			return nil
		}
		return m
	}
	if r == nil || r.Kind != yaml.MappingNode {
		p.wrongType(n, "a payload mapping: an expression giving an object, or key: expression lines")
		return nil
	}
	if depth >= maxMappingDepth {
		p.addAt(n, ruleBadExpression, "a payload mapping nests at most %d levels: write the deeper part as one expression, e.g. {\"a\": context.a}", maxMappingDepth)
		return nil
	}
	entries, _ := p.entries(n, "a payload mapping")
	good := true
	for _, e := range entries {
		f := &MappingField{Key: e.name, Pos: posOf(e.key)}
		if e.name == "" {
			p.addAt(e.key, ruleBadName, "a payload key is empty")
			good = false
			continue
		}
		if v := resolve(e.val); v != nil && v.Kind == yaml.MappingNode {
			f.Nested = p.mapping(e.val, k, depth+1)
			good = good && f.Nested != nil
		} else {
			f.Expr = p.expression(e.val, k, false, fmt.Sprintf("the value of %s", clip(e.name)))
			good = good && f.Expr != nil
		}
		m.Fields = append(m.Fields, f)
	}
	if !good {
		return nil
	}
	return m
}

// maxMappingDepth bounds the nesting of a payload mapping's keys.
const maxMappingDepth = 8

// events reads the `events:` section (data contracts).
func (p *parser) events(def *Definition, n *yaml.Node) {
	if isNull(n) {
		return
	}
	entries, ok := p.entries(n, "a mapping of event names to their data contracts")
	if !ok {
		return
	}
	for _, e := range entries {
		nm, _ := p.name(e.key, "event", upperSnake)
		ev := &Event{Name: e.name, Pos: nm.Pos}
		def.Events[e.name] = ev
		if isNull(e.val) {
			continue
		}
		fields, ok := p.object(e.val, fmt.Sprintf("the contract of event `%s`", clip(e.name)), eventFields)
		if !ok {
			continue
		}
		if f, ok := fields["description"]; ok {
			ev.Description, _ = p.str(f.val, "a text for description")
		}
		if f, ok := fields["writes"]; ok {
			writes, ok := p.names(f.val, "a list of top-level context keys", "context key", contextKey)
			if ok {
				ev.Writes = writes
			}
		}
		if f, ok := fields["schema"]; ok {
			ev.Schema = p.schema(e.name, f.val)
		}
	}
}

// schema reads and compiles an event's JSON Schema: written inline (a
// mapping) or a file relative to the definition's directory, under
// schemas/.
func (p *parser) schema(event string, n *yaml.Node) *Schema {
	r := resolve(n)
	s := &Schema{Pos: posOf(n)}
	// The same schema (an alias, or one file named by several events) is
	// compiled once.
	key := any(r)
	if r != nil && r.Kind == yaml.ScalarNode {
		key = r.Value
	}
	if sch, ok := p.schemas[key]; ok && sch != nil {
		s.Path, s.compiled = sch.Path, sch.compiled
		return s
	}
	var doc any
	switch {
	case r != nil && r.Kind == yaml.MappingNode:
		v, err := yamlToJSON(r)
		if err != nil {
			p.addAt(n, ruleBadSchema, "the schema of %s cannot be read as JSON: %v", event, err)
			return nil
		}
		doc = v
	case r != nil && r.Kind == yaml.ScalarNode && r.ShortTag() == "!!str":
		s.Path = r.Value
		v, ok := p.schemaFile(n, r.Value)
		if !ok {
			return nil
		}
		doc = v
	default:
		p.wrongType(n, "a JSON Schema (a mapping) or the path of a schema file, e.g. schemas/order_placed.json")
		return nil
	}
	url := schemaBase + event + ".json"
	if s.Path != "" {
		url = schemaBase + s.Path
	}
	c := jsonschema.NewCompiler()
	c.DefaultDraft(jsonschema.Draft2020)
	c.UseLoader(noLoader{})
	if err := c.AddResource(url, doc); err != nil {
		p.addAt(n, ruleBadSchema, "the schema of %s: %s", event, schemaError(err))
		return nil
	}
	sch, err := c.Compile(url)
	if err != nil {
		p.addAt(n, ruleBadSchema, "the schema of %s is not a valid JSON Schema: %s", event, schemaError(err))
		return nil
	}
	s.compiled = sch
	if p.schemas == nil {
		p.schemas = map[any]*Schema{}
	}
	p.schemas[key] = s
	return s
}

// schemaBase is the made-up location of the definitions' schemas: a $ref
// can only point inside its own schema (noLoader refuses everything else).
const schemaBase = "https://schemas.saga-machine.invalid/"

// noLoader is the schema loader of definitions: nothing is fetched, neither
// from the network nor from files; a schema refers only inside itself.
type noLoader struct{}

func (noLoader) Load(url string) (any, error) {
	return nil, fmt.Errorf("a schema of a saga definition can refer only inside itself ($ref: \"#/$defs/...\"), not to %s", url)
}

// schemaError shortens a jsonschema error for a problem message.
func schemaError(err error) string {
	var sve *jsonschema.SchemaValidationError
	if errors.As(err, &sve) {
		return clipN(violations(sve.Err), 300)
	}
	return clipN(violations(err), 300)
}

// violations lists where a value breaks a schema, one "at /path: what"
// per place (the leaves of the validator's detailed output), or the
// error's text when it is no validation error.
func violations(err error) string {
	var ve *jsonschema.ValidationError
	if !errors.As(err, &ve) {
		msg := strings.ReplaceAll(err.Error(), schemaBase, "")
		return strings.Join(strings.Fields(msg), " ")
	}
	var out []string
	var walk func(u *jsonschema.OutputUnit)
	walk = func(u *jsonschema.OutputUnit) {
		if len(u.Errors) == 0 {
			if u.Error != nil {
				at := u.InstanceLocation
				if at == "" {
					at = "/"
				}
				out = append(out, fmt.Sprintf("at %s: %s", at, u.Error.String()))
			}
			return
		}
		for i := range u.Errors {
			walk(&u.Errors[i])
		}
	}
	walk(ve.DetailedOutput())
	sort.Strings(out) // the validator visits properties in map order
	if len(out) == 0 {
		return strings.Join(strings.Fields(ve.Error()), " ")
	}
	return strings.Join(out, "; ")
}

func clipN(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return cutUTF8(s, n-len("…")) + "…"
}

// schemaFile reads a schema file named in the definition: a clean path
// relative to the definition's directory, under schemas/, at most
// MaxSchemaBytes, all schema files of a definition together at most
// MaxFileBytes.
func (p *parser) schemaFile(n *yaml.Node, name string) (any, bool) {
	ext := path.Ext(name)
	switch {
	case !fs.ValidPath(name) || !strings.HasPrefix(name, "schemas/") || strings.Contains(name, `\`):
		p.addAt(n, ruleSchemaFile, "schema file `%s`: write a path relative to the definition's directory, under schemas/ and without .. (e.g. schemas/order_placed.json)", clip(name))
		return nil, false
	case ext != ".json" && ext != ".yaml" && ext != ".yml":
		p.addAt(n, ruleSchemaFile, "schema file `%s`: a schema file ends with .json, .yaml or .yml", clip(name))
		return nil, false
	case p.files == nil:
		p.addAt(n, ruleSchemaFile, "schema file `%s` cannot be read here (only the definition itself was given): write the schema inline, or check the file with sagactl or saga-machine, which read sagas/schemas/", clip(name))
		return nil, false
	}
	f, err := p.files.Open(name)
	if err != nil {
		p.addAt(n, ruleSchemaFile, "schema file `%s` cannot be read: %v", clip(name), unwrapPath(err))
		return nil, false
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, MaxSchemaBytes+1))
	if err != nil {
		p.addAt(n, ruleSchemaFile, "schema file `%s` cannot be read: %v", clip(name), unwrapPath(err))
		return nil, false
	}
	if len(data) > MaxSchemaBytes {
		p.addAt(n, ruleSchemaFile, "schema file `%s` is larger than %d bytes: an event's schema is a few kilobytes", clip(name), MaxSchemaBytes)
		return nil, false
	}
	if p.schemaBytes += len(data); p.schemaBytes > MaxFileBytes {
		p.addAt(n, ruleSchemaFile, "the schema files of this definition are larger than %d bytes together: share schemas with $defs, or split the saga", MaxFileBytes)
		return nil, false
	}
	var doc any
	if ext == ".json" {
		doc, err = jsonschema.UnmarshalJSON(bytes.NewReader(data))
	} else {
		var node yaml.Node
		if err = yaml.Unmarshal(data, &node); err == nil {
			doc, err = yamlToJSON(&node)
		}
	}
	if err != nil {
		p.addAt(n, ruleSchemaFile, "schema file `%s` is not valid %s: %s", clip(name), strings.ToUpper(strings.TrimPrefix(ext, ".")), clipN(err.Error(), 200))
		return nil, false
	}
	return doc, true
}

func unwrapPath(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// yamlToJSON converts a YAML node (anchors and aliases resolved, within
// the limits already checked) into the JSON value the schema compiler
// reads: numbers as json.Number.
func yamlToJSON(n *yaml.Node) (any, error) {
	var v any
	if err := n.Decode(&v); err != nil {
		return nil, err
	}
	b, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	return jsonschema.UnmarshalJSON(bytes.NewReader(b))
}

// Schema is the JSON Schema an event's payload must satisfy, compiled when
// the definition is read.
type Schema struct {
	Path string // the file relative to the definition's directory; "" for a schema written inline
	Pos  Pos

	compiled *jsonschema.Schema
}

// MaxSchemaErrorBytes bounds the text of a schema violation (which quotes
// the payload): Validate cuts it there.
const MaxSchemaErrorBytes = 1024

// Validate checks payload (a JSON object; empty or null stand for {})
// against the schema. The error says every place where the payload breaks
// the schema, in at most MaxSchemaErrorBytes.
func (s *Schema) Validate(payload json.RawMessage) error {
	t := bytes.TrimSpace(payload)
	if len(t) == 0 || bytes.Equal(t, []byte("null")) {
		t = []byte("{}")
	}
	inst, err := jsonschema.UnmarshalJSON(bytes.NewReader(t))
	if err != nil {
		return fmt.Errorf("the payload is not JSON: %w", err)
	}
	if err := s.compiled.Validate(inst); err != nil {
		msg := violations(err)
		if !utf8.ValidString(msg) {
			msg = strings.ToValidUTF8(msg, "?")
		}
		return errors.New(clipN(msg, MaxSchemaErrorBytes))
	}
	return nil
}
