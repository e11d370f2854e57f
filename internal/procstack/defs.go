package procstack

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// Retry is a retry policy Config.Retries puts on a command.
type Retry struct {
	// Attempts is the number of sends, the first one included.
	Attempts int
	// Backoff is the wait before the first re-send; it doubles each time.
	Backoff time.Duration
	// MaxBackoff caps the wait; zero removes the cap from the definition
	// (the language's default: every wait is Backoff).
	MaxBackoff time.Duration
}

// Budget is how long the engine waits for an answer before it raises the
// retry's exhausted event: every wait, the one after the last send
// included (the command's deadline is the first send + Budget).
func (r Retry) Budget() time.Duration {
	var total time.Duration
	wait := r.Backoff
	for range r.Attempts {
		total += wait
		wait *= 2
		if r.MaxBackoff > 0 && wait > r.MaxBackoff {
			wait = r.MaxBackoff
		} else if r.MaxBackoff == 0 {
			wait = r.Backoff
		}
	}
	return total
}

// RewriteDefinitions copies every *.yaml saga definition at the root of src
// into dir, rewritten for an isolated test: each participant's topic
// becomes topics[participant], and the retry of every send and every
// compensation of a command named in retries becomes that policy (a send's
// exhausted event is kept; a compensation without a retry gets one). It
// fails when a participant has no topic in topics, when a command of
// retries appears nowhere (a typo would otherwise leave the budget long),
// or when a send to shorten has no retry (it has no exhausted event to
// keep). Comments are kept; saga-machine validates the result when it
// loads it.
func RewriteDefinitions(src fs.FS, dir string, topics map[string]string, retries map[string]Retry) error {
	files, err := fs.Glob(src, "*.yaml")
	if err != nil {
		return fmt.Errorf("procstack: list the definitions: %w", err)
	}
	if len(files) == 0 {
		return errors.New("procstack: no *.yaml saga definition to rewrite")
	}
	used := map[string]int{}
	for _, name := range files {
		b, err := fs.ReadFile(src, name)
		if err != nil {
			return fmt.Errorf("procstack: read definition %s: %w", name, err)
		}
		out, err := rewriteDefinition(b, topics, retries, used)
		if err != nil {
			return fmt.Errorf("procstack: rewrite definition %s: %w", name, err)
		}
		if err := os.WriteFile(filepath.Join(dir, path.Base(name)), out, 0o644); err != nil {
			return fmt.Errorf("procstack: write definition %s: %w", name, err)
		}
	}
	var unused []string
	for cmd := range retries {
		if used[cmd] == 0 {
			unused = append(unused, cmd)
		}
	}
	if len(unused) > 0 {
		sort.Strings(unused)
		return fmt.Errorf("procstack: Retries names commands that no definition sends: %s", strings.Join(unused, ", "))
	}
	return nil
}

func rewriteDefinition(b []byte, topics map[string]string, retries map[string]Retry, used map[string]int) ([]byte, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(b, &doc); err != nil {
		return nil, fmt.Errorf("parse: %w", err)
	}
	if doc.Kind != yaml.DocumentNode || len(doc.Content) != 1 || doc.Content[0].Kind != yaml.MappingNode {
		return nil, errors.New("not a YAML mapping")
	}
	root := doc.Content[0]
	parts := field(root, "participants")
	if parts == nil || parts.Kind != yaml.MappingNode {
		return nil, errors.New("no participants mapping")
	}
	for i := 0; i+1 < len(parts.Content); i += 2 {
		name, body := parts.Content[i].Value, resolve(parts.Content[i+1])
		topic, ok := topics[name]
		if !ok {
			return nil, fmt.Errorf("participant %s has no topic in the stack (it runs %s)", name, strings.Join(sortedKeys(topics), ", "))
		}
		if body.Kind != yaml.MappingNode {
			return nil, fmt.Errorf("participant %s: not a mapping", name)
		}
		setScalar(body, "topic", topic, "")
	}
	trs := field(root, "transitions")
	if trs == nil || trs.Kind != yaml.SequenceNode {
		return nil, errors.New("no transitions list")
	}
	for i, tr := range trs.Content {
		tr = resolve(tr)
		if tr.Kind != yaml.MappingNode {
			continue
		}
		if c := field(tr, "compensate"); c != nil {
			if err := setRetry(c, retries, true, used); err != nil {
				return nil, fmt.Errorf("transition %d: compensate: %w", i+1, err)
			}
		}
		send := field(tr, "send")
		if send == nil || send.Kind != yaml.MappingNode {
			continue
		}
		if err := setRetry(send, retries, false, used); err != nil {
			return nil, fmt.Errorf("transition %d: send: %w", i+1, err)
		}
		if c := field(send, "compensate"); c != nil {
			if err := setRetry(c, retries, true, used); err != nil {
				return nil, fmt.Errorf("transition %d: send.compensate: %w", i+1, err)
			}
		}
	}
	out, err := yaml.Marshal(&doc)
	if err != nil {
		return nil, fmt.Errorf("encode: %w", err)
	}
	return out, nil
}

// setRetry puts retries[command] on m (a send or a compensate mapping).
func setRetry(m *yaml.Node, retries map[string]Retry, compensation bool, used map[string]int) error {
	if m.Kind != yaml.MappingNode {
		return nil
	}
	cmd := field(m, "command")
	if cmd == nil {
		return nil
	}
	r, ok := retries[cmd.Value]
	if !ok {
		return nil
	}
	if r.Attempts < 1 || r.Backoff <= 0 || (r.MaxBackoff != 0 && r.MaxBackoff < r.Backoff) {
		return fmt.Errorf("Retries[%s] = %+v: want Attempts >= 1, Backoff > 0, MaxBackoff 0 or >= Backoff", cmd.Value, r)
	}
	used[cmd.Value]++
	retry := field(m, "retry")
	if retry == nil {
		if !compensation {
			return fmt.Errorf("%s is sent without a retry: there is no exhausted event to keep", cmd.Value)
		}
		retry = &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map", Style: yaml.FlowStyle}
		m.Content = append(m.Content, &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: "retry"}, retry)
	}
	if retry.Kind != yaml.MappingNode {
		return fmt.Errorf("%s: retry is not a mapping", cmd.Value)
	}
	setScalar(retry, "attempts", strconv.Itoa(r.Attempts), "!!int")
	setScalar(retry, "backoff", r.Backoff.String(), "")
	if r.MaxBackoff > 0 {
		setScalar(retry, "max_backoff", r.MaxBackoff.String(), "")
	} else {
		deleteKey(retry, "max_backoff")
	}
	return nil
}

// resolve follows YAML aliases to the anchored node.
func resolve(n *yaml.Node) *yaml.Node {
	for i := 0; n != nil && n.Kind == yaml.AliasNode && i < 8; i++ {
		n = n.Alias
	}
	return n
}

// field returns the value of key in mapping m (aliases resolved), or nil.
func field(m *yaml.Node, key string) *yaml.Node {
	m = resolve(m)
	if m == nil || m.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			return resolve(m.Content[i+1])
		}
	}
	return nil
}

// setScalar sets key of mapping m to the scalar value (adding the key if
// missing); tag "" means a plain string.
func setScalar(m *yaml.Node, key, value, tag string) {
	if tag == "" {
		tag = "!!str"
	}
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			m.Content[i+1] = &yaml.Node{Kind: yaml.ScalarNode, Tag: tag, Value: value}
			return
		}
	}
	m.Content = append(m.Content, &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: key},
		&yaml.Node{Kind: yaml.ScalarNode, Tag: tag, Value: value})
}

func deleteKey(m *yaml.Node, key string) {
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			m.Content = append(m.Content[:i], m.Content[i+2:]...)
			return
		}
	}
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
