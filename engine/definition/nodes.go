package definition

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// Name patterns of the language.
var (
	upperSnake      = regexp.MustCompile(`^[A-Z][A-Z0-9_]*$`)
	participantName = regexp.MustCompile(`^[a-z][a-z0-9_-]*$`)
	keyName         = regexp.MustCompile(`^[a-z][a-z0-9_]*$`)
	// roleName is what identity providers allow in role names in practice
	// (Keycloak realm and client roles: saga-operator, deals.trader).
	roleName  = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9_.:-]*$`)
	topicName = regexp.MustCompile(`^[A-Za-z0-9._-]{1,249}$`)
	// durationText is the subset of time.ParseDuration syntax the language
	// accepts (no sign, no bare "0"); the JSON Schema uses the same pattern.
	durationText = regexp.MustCompile(`^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$`)
)

// resolve follows YAML aliases (*name) to the anchored node. The chain is
// short in valid YAML; the bound only guards against surprises.
func resolve(n *yaml.Node) *yaml.Node {
	for i := 0; n != nil && n.Kind == yaml.AliasNode && i < 8; i++ {
		n = n.Alias
	}
	return n
}

// describe names the kind of a node for "expected X, got Y" messages.
func describe(n *yaml.Node) string {
	n = resolve(n)
	if n == nil {
		return "nothing"
	}
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping (key: value pairs)"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		switch n.ShortTag() {
		case "!!str":
			return "a string"
		case "!!int":
			return "a whole number"
		case "!!float":
			return "a decimal number"
		case "!!bool":
			return "a boolean"
		case "!!null":
			return "nothing"
		case "!!timestamp":
			return "a date"
		case "!!binary":
			return "binary data"
		case "!!merge":
			return "a merge key (<<)"
		}
		return "a value tagged " + n.ShortTag()
	case yaml.AliasNode:
		return "an alias"
	}
	return "nothing"
}

func (p *parser) wrongType(n *yaml.Node, expected string) {
	p.addAt(n, ruleWrongType, "expected %s, got %s", expected, describe(n))
}

// isNull reports whether n is absent or an explicit null (`key:` or `~`).
func isNull(n *yaml.Node) bool {
	n = resolve(n)
	return n == nil || (n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null")
}

// pair is one key: value entry of a mapping.
type pair struct {
	key, val *yaml.Node
	name     string
}

// entries returns the entries of mapping n in file order, reporting keys that
// are not plain strings and duplicate keys (only the first one is kept). It
// reports a wrong-type problem and returns false when n is not a mapping.
func (p *parser) entries(n *yaml.Node, expected string) ([]pair, bool) {
	n = resolve(n)
	if n == nil || n.Kind != yaml.MappingNode {
		p.wrongType(n, expected)
		return nil, false
	}
	var out []pair
	seen := map[string]*yaml.Node{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		rk := resolve(k)
		if rk == nil || rk.Kind != yaml.ScalarNode {
			p.addAt(k, ruleWrongType, "expected a name as key, got %s", describe(k))
			continue
		}
		if rk.ShortTag() == "!!merge" {
			p.addAt(k, ruleUnsupportedYAML, "merge keys (<<) are not supported: write the keys out, or use an alias (*name) for the whole value")
			continue
		}
		if first, dup := seen[rk.Value]; dup {
			p.addAt(k, ruleDuplicateKey, "duplicate key `%s`: it is already set at line %d", clip(rk.Value), first.Line)
			continue
		}
		seen[rk.Value] = k
		out = append(out, pair{key: k, val: v, name: rk.Value})
	}
	return out, true
}

// field describes one known key of a fixed-shape mapping.
type field struct {
	name     string
	required bool
	meaning  string // for "missing key" messages
}

// object reads a mapping with a fixed set of keys: it reports unknown keys
// (with a suggestion), duplicates and missing required keys, and returns the
// entries by key. ok is false when n is not a mapping at all.
func (p *parser) object(n *yaml.Node, label string, fields []field) (map[string]pair, bool) {
	ps, ok := p.entries(n, "a mapping (key: value pairs) for "+label)
	if !ok {
		return nil, false
	}
	known := make([]string, len(fields))
	for i, f := range fields {
		known[i] = f.name
	}
	got := map[string]pair{}
	for _, e := range ps {
		if !contains(known, e.name) {
			msg := fmt.Sprintf("unknown key `%s` in %s", clip(e.name), label)
			if s := p.suggest(e.name, known); s != "" {
				msg += fmt.Sprintf("; did you mean `%s`?", s)
			} else {
				msg += "; allowed keys: " + strings.Join(known, ", ")
			}
			p.addAt(e.key, ruleUnknownKey, "%s", msg)
			continue
		}
		got[e.name] = e
	}
	for _, f := range fields {
		if _, ok := got[f.name]; f.required && !ok {
			p.addAt(n, ruleMissingKey, "%s is missing the required key `%s` (%s)", label, f.name, f.meaning)
		}
	}
	return got, true
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// str reads a string scalar.
func (p *parser) str(n *yaml.Node, expected string) (string, bool) {
	r := resolve(n)
	if r == nil || r.Kind != yaml.ScalarNode || r.ShortTag() != "!!str" {
		p.wrongType(n, expected)
		return "", false
	}
	return r.Value, true
}

// name reads a name (event, state, participant...) and checks its spelling.
// A misspelled name is still returned (ok true) so later checks can use it;
// ok is false only when there is no usable string.
func (p *parser) name(n *yaml.Node, what string, re *regexp.Regexp) (Name, bool) {
	s, ok := p.str(n, article2(what))
	if !ok {
		return Name{}, false
	}
	switch {
	case len(s) > MaxNameBytes:
		p.addAt(n, ruleBadName, "%s name `%s` is %d bytes long: names have at most %d", what, clip(s), len(s), MaxNameBytes)
	case !re.MatchString(s):
		p.addAt(n, ruleBadName, "%s", badNameMessage(s, what, re))
	}
	return Name{Value: s, Pos: posOf(n)}, true
}

func article2(what string) string {
	if what == "" {
		return "a name"
	}
	switch what[0] {
	case 'a', 'e', 'i', 'o', 'u':
		return "an " + what + " name"
	}
	return "a " + what + " name"
}

func badNameMessage(s, what string, re *regexp.Regexp) string {
	var rule, fix string
	switch re {
	case upperSnake:
		rule = "UPPER_SNAKE_CASE (capital letters, digits and _, starting with a letter)"
		fix = strings.ToUpper(nonAlnum.ReplaceAllString(strings.TrimSpace(s), "_"))
	case participantName:
		rule = "lower case (small letters, digits, _ and -, starting with a letter)"
		fix = strings.ToLower(strings.ReplaceAll(strings.TrimSpace(s), " ", "_"))
	case keyName:
		rule = "lower_snake_case (small letters, digits and _, starting with a letter)"
		fix = strings.ToLower(nonAlnum.ReplaceAllString(camelHump.ReplaceAllString(strings.TrimSpace(s), "${1}_${2}"), "_"))
	case roleName:
		rule = "letters, digits, _, ., : and -, starting with a letter"
		fix = strings.Trim(nonRole.ReplaceAllString(strings.TrimSpace(s), "-"), "-_.:")
	default:
		rule = "written as " + re.String()
	}
	msg := fmt.Sprintf("%s name `%s` must be %s", what, clip(s), rule)
	if fix != s && re.MatchString(fix) {
		msg += fmt.Sprintf("; did you mean `%s`?", clip(fix))
	}
	return msg
}

var (
	nonAlnum  = regexp.MustCompile(`[^A-Za-z0-9]+`)
	camelHump = regexp.MustCompile(`([a-z0-9])([A-Z])`)
	nonRole   = regexp.MustCompile(`[^A-Za-z0-9_.:-]+`)
)

// names reads a list of names; repeated names are reported and dropped.
func (p *parser) names(n *yaml.Node, expected, what string, re *regexp.Regexp) ([]Name, bool) {
	r := resolve(n)
	if r == nil || r.Kind != yaml.SequenceNode {
		msg := fmt.Sprintf("expected %s, got %s", expected, describe(n))
		if r != nil && r.Kind == yaml.ScalarNode && r.ShortTag() == "!!str" {
			msg += fmt.Sprintf(" (write [%s])", clip(r.Value))
		}
		p.addAt(n, ruleWrongType, "%s", msg)
		return nil, false
	}
	out := []Name{}
	ok := true
	seen := map[string]Pos{}
	for _, item := range r.Content {
		nm, good := p.name(item, what, re)
		if !good {
			ok = false
			continue
		}
		if first, dup := seen[nm.Value]; dup {
			p.add(nm.Pos, ruleDuplicateEntry, "%s `%s` is listed twice (first at line %d, column %d)", what, nm.Value, first.Line, first.Col)
			continue
		}
		seen[nm.Value] = nm.Pos
		out = append(out, nm)
	}
	return out, ok
}

// integer reads a whole number.
func (p *parser) integer(n *yaml.Node, rule string, what string) (int, bool) {
	r := resolve(n)
	if r == nil || r.Kind != yaml.ScalarNode || r.ShortTag() != "!!int" {
		p.wrongType(n, "a whole number for "+what)
		return 0, false
	}
	v, err := strconv.ParseInt(strings.ReplaceAll(r.Value, "_", ""), 0, 64)
	if err != nil || v > 1<<31 || v < -(1<<31) {
		p.addAt(n, rule, "%s %s is out of range", what, clip(r.Value))
		return 0, false
	}
	return int(v), true
}

// duration reads a duration such as 30s, 10m or 1h30m and checks its range.
func (p *parser) duration(n *yaml.Node, what, rule string, lo, hi time.Duration) (time.Duration, bool) {
	r := resolve(n)
	if r == nil || r.Kind != yaml.ScalarNode || (r.ShortTag() != "!!str" && r.ShortTag() != "!!int" && r.ShortTag() != "!!float") {
		p.wrongType(n, "a duration for "+what+" (e.g. 30s, 10m, 1h30m)")
		return 0, false
	}
	if r.ShortTag() != "!!str" {
		v := clip(r.Value)
		p.addAt(n, ruleBadDuration, "%s `%s` has no unit: write e.g. %ss or %sm", what, v, v, v)
		return 0, false
	}
	d, err := time.ParseDuration(r.Value)
	if err != nil || !durationText.MatchString(r.Value) {
		p.addAt(n, ruleBadDuration, "%s `%s` is not a duration: write a number and a unit (ms, s, m, h), e.g. 30s, 10m, 1h30m", what, clip(r.Value))
		return 0, false
	}
	if d < lo || d > hi {
		p.addAt(n, rule, "%s %s is out of range: it must be between %s and %s", what, clip(r.Value), fmtDuration(lo), fmtDuration(hi))
		return d, false
	}
	return d, true
}

// fmtDuration prints a duration the way an analyst writes it (1m, not 1m0s).
func fmtDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}
