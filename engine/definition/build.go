package definition

import (
	"fmt"
	"regexp"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/portfolio-counselor/sagamachine/engine/expr"
)

// Ranges of the language's numbers.
const (
	minAttempts = 1
	maxAttempts = 100
	minBackoff  = 100 * time.Millisecond
	maxBackoff  = 24 * time.Hour
	minTimeout  = time.Second
	maxTimeout  = 720 * time.Hour
)

var (
	topFields = []field{
		{"saga", true, "the saga's name in UPPER_SNAKE_CASE, e.g. MANUAL_CREATE_ORDER"},
		{"version", true, "a positive whole number, e.g. 1"},
		{"description", false, ""},
		{"participants", true, "the services taking part, each with its topic"},
		{"keys", false, ""},
		{"states", false, ""},
		{"transitions", true, "the rows of the state machine"},
		{"final", true, "the states where the saga ends successfully"},
		{"failed", false, ""},
		{"events", false, ""},
	}
	participantFields = []field{
		{"topic", true, "the Kafka topic the participant reads its commands from"},
		{"description", false, ""},
	}
	stateFields = []field{
		{"description", false, ""},
		{"timeout", false, ""},
	}
	timeoutFields = []field{
		{"after", true, "how long the saga may stay in the state, e.g. 10m"},
		{"event", true, "the event the engine raises when the time is up"},
	}
	transitionFields = []field{
		{"on", true, "the event that triggers this transition"},
		{"by", true, "the participant that emits the event, engine, or api"},
		{"from", true, "the states this transition applies in; from: [] starts a new saga"},
		{"to", true, "the state the saga moves to"},
		{"roles", false, ""},
		{"when", false, ""},
		{"compensate", false, ""},
		{"send", false, ""},
		{"join", false, ""},
		{"description", false, ""},
	}
	// A single send knows the keys of a branch so that writing one gets
	// its own rule (branch-only).
	sendFields = []field{
		{"to", true, "the participant that receives the command"},
		{"command", true, "the command's name"},
		{"retry", false, ""},
		{"compensate", false, ""},
		{"payload", false, ""},
		{"effects", false, ""},
		{"ok", false, ""},
		{"fail", false, ""},
		{"for_each", false, ""},
	}
	branchFields = []field{
		{"to", true, "the participant that receives the command"},
		{"command", true, "the command's name"},
		{"ok", true, "the event the participant answers when the branch succeeded"},
		{"fail", false, ""},
		{"retry", false, ""},
		{"compensate", false, ""},
		{"payload", false, ""},
		{"for_each", false, ""},
	}
	joinFields = []field{
		{"policy", true, "all, first or at_least: how many branches must succeed"},
		{"n", false, ""},
		{"then", true, "the event the engine raises when enough branches succeeded"},
		{"else", true, "the event the engine raises when enough branches can no longer succeed"},
	}
	eventFields = []field{
		{"description", false, ""},
		{"schema", false, ""},
		{"writes", false, ""},
	}
	compensateFields = []field{
		{"command", true, "the command that undoes the effect"},
		{"done", true, "the event the participant answers once the undo is done"},
		{"to", false, ""},
		{"retry", false, ""},
	}
	// A compensation's retry has no exhausted event; the key is known so
	// that writing one gets its own rule (compensate-exhausted).
	compensateRetryFields = []field{
		{"attempts", true, "how many sends in all, the first one included"},
		{"backoff", true, "the wait before the first re-send, e.g. 1s"},
		{"max_backoff", false, ""},
		{"exhausted", false, ""},
	}
	retryFields = []field{
		{"attempts", true, "how many sends in all, the first one included"},
		{"backoff", true, "the wait before the first re-send, e.g. 2s"},
		{"max_backoff", false, ""},
		{"exhausted", true, "the event the engine raises when every attempt went unanswered"},
	}
)

// definition walks the root mapping and builds the Definition, reporting
// every structural problem on the way.
func (p *parser) definition(root *yaml.Node) *Definition {
	def := &Definition{
		File:         p.file,
		Participants: map[string]*Participant{},
		Keys:         map[string]*Key{},
		States:       map[string]*State{},
		Events:       map[string]*Event{},
		Pos:          posOf(root),
	}
	top, ok := p.object(root, "the saga definition", topFields)
	if !ok {
		return nil
	}
	if e, ok := top["saga"]; ok {
		if n, ok := p.name(e.val, "saga", upperSnake); ok {
			def.Saga = n.Value
		}
	}
	if e, ok := top["version"]; ok {
		if v, ok := p.integer(e.val, ruleBadVersion, "version"); ok {
			if v < 1 {
				p.addAt(e.val, ruleBadVersion, "version %d must be a positive whole number (1, 2, ...)", v)
			}
			def.Version = v
		}
	}
	if e, ok := top["description"]; ok {
		def.Description, _ = p.str(e.val, "a text for description")
	}
	if e, ok := top["participants"]; ok {
		p.participantsOK = p.participants(def, e.val)
	}
	if e, ok := top["keys"]; ok {
		p.keys(def, e.val)
	}
	p.statesOK = true
	if e, ok := top["states"]; ok {
		p.statesOK = p.states(def, e.val)
	}
	if e, ok := top["transitions"]; ok {
		p.transitionsNode = e.val
		p.transitionsOK = p.transitions(def, e.val)
	}
	p.terminalsOK = true
	if e, ok := top["final"]; ok {
		final, ok := p.names(e.val, "a list of states", "state", upperSnake)
		if ok && len(final) == 0 {
			p.addAt(e.val, ruleNoFinal, "final must list at least one state where the saga ends successfully")
		}
		def.Final = final
		p.terminalsOK = ok
	} else {
		p.terminalsOK = false
	}
	if e, ok := top["failed"]; ok {
		failed, ok := p.names(e.val, "a list of states", "state", upperSnake)
		def.Failed = failed
		p.terminalsOK = p.terminalsOK && ok
	}
	if e, ok := top["events"]; ok {
		p.events(def, e.val)
	}
	p.collectStates(def)
	p.checkStateCount(def)
	return def
}

func (p *parser) participants(def *Definition, n *yaml.Node) bool {
	entries, ok := p.entries(n, "a mapping of participant names to their settings")
	if !ok {
		return false
	}
	if len(entries) == 0 {
		p.addAt(n, ruleMissingKey, "participants is empty: declare at least one participant with its topic")
	}
	if len(entries) > MaxParticipants {
		p.tooMany(entries[MaxParticipants].key, ruleTooManyParticipants, MaxParticipants, "participants")
		return false
	}
	topics := map[string]*yaml.Node{}
	for _, e := range entries {
		nm, _ := p.name(e.key, "participant", participantName)
		switch nm.Value {
		case Engine:
			p.addAt(e.key, ruleReserved, "the participant name `engine` is reserved for the saga machine itself (timeouts and exhausted retries); choose another name")
		case API:
			p.addAt(e.key, ruleReserved, "the participant name `api` is reserved for callers of saga-machine's HTTP API (by: api with roles); choose another name")
		}
		part := &Participant{Name: e.name, Pos: posOf(e.key)}
		def.Participants[e.name] = part
		fields, ok := p.object(e.val, fmt.Sprintf("participant `%s`", e.name), participantFields)
		if !ok {
			continue
		}
		if f, ok := fields["topic"]; ok {
			if t, ok := p.str(f.val, "a Kafka topic name for topic"); ok {
				part.Topic = t
				if !topicName.MatchString(t) {
					p.addAt(f.val, ruleBadTopic, "topic `%s` is not a valid Kafka topic name: use 1 to 249 letters, digits, '.', '_' or '-'", clip(t))
				} else if first, dup := topics[t]; dup {
					p.addAt(f.val, ruleDuplicateTopic, "topic `%s` is already the topic of another participant (line %d): each participant needs its own topic", clip(t), first.Line)
				} else {
					topics[t] = f.val
				}
			}
		}
		if f, ok := fields["description"]; ok {
			part.Description, _ = p.str(f.val, "a text for description")
		}
	}
	return true
}

func (p *parser) keys(def *Definition, n *yaml.Node) {
	if isNull(n) {
		return
	}
	entries, ok := p.entries(n, "a mapping of key names to paths into the saga context")
	if !ok {
		return
	}
	if len(entries) > MaxKeys {
		p.tooMany(entries[MaxKeys].key, ruleTooManyKeys, MaxKeys, "keys")
		return
	}
	for _, e := range entries {
		p.name(e.key, "key", keyName)
		path, ok := p.str(e.val, "a dotted path into the saga context, e.g. deal_context.deal_id")
		if !ok {
			continue
		}
		for _, seg := range strings.Split(path, ".") {
			if strings.TrimSpace(seg) == "" {
				p.addAt(e.val, ruleBadKeyPath, "key path `%s` has an empty segment: write field names separated by single dots, e.g. deal_context.deal_id", clip(path))
				break
			}
		}
		def.Keys[e.name] = &Key{Name: e.name, Path: path, Pos: posOf(e.key)}
	}
}

func (p *parser) states(def *Definition, n *yaml.Node) bool {
	if isNull(n) {
		return true
	}
	entries, ok := p.entries(n, "a mapping of state names to their settings")
	if !ok {
		return false
	}
	if len(entries) > MaxStates {
		p.tooMany(entries[MaxStates].key, ruleTooManyStates, MaxStates, "states")
		return false
	}
	all := true
	for _, e := range entries {
		p.name(e.key, "state", upperSnake)
		st := &State{Name: e.name, Declared: true, Pos: posOf(e.key)}
		def.States[e.name] = st
		if isNull(e.val) {
			continue
		}
		fields, ok := p.object(e.val, fmt.Sprintf("state `%s`", e.name), stateFields)
		if !ok {
			continue
		}
		if f, ok := fields["description"]; ok {
			st.Description, _ = p.str(f.val, "a text for description")
		}
		if f, ok := fields["timeout"]; ok {
			st.Timeout = p.timeout(f.val, e.name)
			if st.Timeout == nil {
				all = false
			}
		}
	}
	return all
}

func (p *parser) timeout(n *yaml.Node, state string) *Timeout {
	fields, ok := p.object(n, fmt.Sprintf("the timeout of state `%s`", state), timeoutFields)
	if !ok {
		return nil
	}
	// A bad duration is reported but does not hide the event from the
	// graph checks; only a missing or unreadable event does.
	t := &Timeout{Pos: posOf(resolve(n))}
	good := true
	if f, ok := fields["after"]; ok {
		t.After, _ = p.duration(f.val, "timeout after", ruleTimeoutRange, minTimeout, maxTimeout)
	}
	if f, ok := fields["event"]; ok {
		t.Event, ok = p.name(f.val, "event", upperSnake)
		good = good && ok
	} else {
		good = false
	}
	if !good {
		return nil
	}
	return t
}

func (p *parser) transitions(def *Definition, n *yaml.Node) bool {
	r := resolve(n)
	if r == nil || r.Kind != yaml.SequenceNode {
		p.wrongType(n, "a list of transitions")
		return false
	}
	if len(r.Content) > MaxTransitions {
		p.tooMany(r.Content[MaxTransitions], ruleTooManyTransitions, MaxTransitions, "transitions")
		return false
	}
	all := true
	edges := 0
	for _, item := range r.Content {
		t := p.transition(item)
		if t == nil {
			all = false
			continue
		}
		def.Transitions = append(def.Transitions, t)
		if edges += max(len(t.From), 1); edges > MaxEdges {
			p.limited = true
			p.add(t.Pos, ruleTooManyEdges, "the transitions accept their events in more than %d states in all (their from lists together) by this one; split the saga", MaxEdges)
			return false
		}
	}
	return all
}

// transition reads one row; it returns nil when the row is too broken for
// the graph checks (a missing or unreadable on, by, from or to).
func (p *parser) transition(n *yaml.Node) *Transition {
	fields, ok := p.object(n, "the transition", transitionFields)
	if !ok {
		return nil
	}
	t := &Transition{Pos: posOf(resolve(n))}
	good := true
	if f, ok := fields["on"]; ok {
		t.On, ok = p.name(f.val, "event", upperSnake)
		good = good && ok
	} else {
		good = false
	}
	if f, ok := fields["by"]; ok {
		t.By, ok = p.name(f.val, "participant", participantName)
		good = good && ok
	} else {
		good = false
	}
	if f, ok := fields["from"]; ok {
		t.From, ok = p.names(f.val, "a list of states", "state", upperSnake)
		good = good && ok
	} else {
		good = false
	}
	if f, ok := fields["to"]; ok {
		t.To, ok = p.name(f.val, "state", upperSnake)
		good = good && ok
	} else {
		good = false
	}
	if f, ok := fields["roles"]; ok {
		roles, ok := p.names(f.val, "a list of role names", "role", roleName)
		if ok && len(roles) == 0 {
			p.addAt(f.val, ruleAPIRoles, "roles is empty: list at least one role allowed to start the saga over the HTTP API, e.g. roles: [deals-trader]")
		}
		t.Roles = roles
		t.rolesPos = posOf(f.key)
		good = good && ok
	}
	if f, ok := fields["when"]; ok {
		// A broken condition does not hide the row from the graph checks.
		t.When = p.expression(f.val, expr.Condition, false, "a condition (when)")
		t.whenWritten = true
	}
	if f, ok := fields["compensate"]; ok {
		// A broken compensation does not hide the row from the graph checks.
		t.Compensate = p.compensation(f.val, "the compensation of the transition", t.By)
	}
	if f, ok := fields["send"]; ok {
		if r := resolve(f.val); r != nil && r.Kind == yaml.SequenceNode {
			t.Branches = p.branches(r)
			good = good && t.Branches != nil
		} else {
			t.Send = p.send(f.val)
			good = good && t.Send != nil
		}
	}
	if f, ok := fields["join"]; ok {
		t.Join = p.join(f.val)
		good = good && t.Join != nil
		switch s := fields["send"]; {
		case s.val == nil:
			p.addAt(f.key, ruleJoinWithoutBranches, "join ends a parallel step, but this transition sends nothing: write send: as a list of the commands sent at once")
			t.Join = nil
		case t.Send != nil:
			p.addAt(f.key, ruleJoinWithoutBranches, "join ends a parallel step, but this transition sends one command: write send: as a list (- to: ...) of the commands sent at once, or remove join")
			t.Join = nil
		}
	} else if t.Branches != nil {
		p.addAt(fields["send"].key, ruleBranchesWithoutJoin, "send: is a list (a parallel step), so the transition needs join: { policy: all | first | at_least, then: EVENT, else: EVENT }: when the step is over")
	}
	if f, ok := fields["description"]; ok {
		t.Description, _ = p.str(f.val, "a text for description")
	}
	if !good {
		return nil
	}
	return t
}

func (p *parser) send(n *yaml.Node) *Send {
	fields, ok := p.object(n, "the send", sendFields)
	if !ok {
		return nil
	}
	s := &Send{Pos: posOf(resolve(n))}
	good := true
	if f, ok := fields["to"]; ok {
		s.To, ok = p.name(f.val, "participant", participantName)
		good = good && ok
	} else {
		good = false
	}
	if f, ok := fields["command"]; ok {
		s.Command, ok = p.name(f.val, "command", upperSnake)
		good = good && ok
	} else {
		good = false
	}
	if f, ok := fields["retry"]; ok {
		s.Retry = p.retry(f.val)
		good = good && s.Retry != nil
	}
	for _, k := range []string{"ok", "fail", "for_each"} {
		if f, ok := fields[k]; ok {
			p.addAt(f.key, ruleBranchOnly, "%s is for the branches of a parallel step (send: as a list with join:); a single send's answer is an event with its own transition", k)
		}
	}
	if f, ok := fields["payload"]; ok {
		s.Payload = p.mapping(f.val, expr.Value, 0)
	}
	if f, ok := fields["effects"]; ok {
		switch v, ok := p.str(f.val, "none"); {
		case !ok:
			good = false
		case v == "none":
			s.NoEffects = true
		default:
			p.addAt(f.val, ruleEffects, "effects `%s` is not none: the only value says the participant commits nothing for the command (a read or a check); leave effects out otherwise", clip(v))
			good = false
		}
	}
	if !good {
		return nil
	}
	if f, ok := fields["compensate"]; ok {
		s.Compensate = p.compensation(f.val, "the compensation of the command", s.To)
		if s.NoEffects && s.Compensate != nil {
			p.addAt(f.key, ruleEffects, "a command with effects: none has nothing to compensate: remove compensate, or effects: none if the participant does commit something")
		}
	}
	return s
}

// branches reads the list of a parallel step's sends; nil when one is too
// broken for the graph checks.
func (p *parser) branches(list *yaml.Node) []*Send {
	if len(list.Content) == 0 {
		p.addAt(list, ruleMissingKey, "send: [] sends nothing: list the commands of the parallel step, or remove send")
		return nil
	}
	if len(list.Content) > MaxBranches {
		p.limited = true
		p.addAt(list.Content[MaxBranches], ruleTooManyBranches, "a parallel step has at most %d branches: this is the %d%s; fan out with for_each over a list instead", MaxBranches, MaxBranches+1, ordinalSuffix(MaxBranches+1))
		return nil
	}
	out := make([]*Send, 0, len(list.Content))
	all := true
	for _, item := range list.Content {
		b := p.branch(item)
		if b == nil {
			all = false
			continue
		}
		out = append(out, b)
	}
	if !all {
		return nil
	}
	return out
}

// branch reads one send of a parallel step.
func (p *parser) branch(n *yaml.Node) *Send {
	fields, ok := p.object(n, "the branch", branchFields)
	if !ok {
		return nil
	}
	s := &Send{Pos: posOf(resolve(n))}
	good := true
	name := func(key, what string, re *regexp.Regexp) Name {
		f, ok := fields[key]
		if !ok {
			return Name{}
		}
		nm, ok := p.name(f.val, what, re)
		good = good && ok
		return nm
	}
	s.To = name("to", "participant", participantName)
	s.Command = name("command", "command", upperSnake)
	s.OK = name("ok", "event", upperSnake)
	s.Fail = name("fail", "event", upperSnake)
	for _, k := range []string{"to", "command", "ok"} {
		if _, ok := fields[k]; !ok {
			good = false
		}
	}
	if f, ok := fields["retry"]; ok {
		rf, ok := p.object(f.val, "the retry policy of the branch", compensateRetryFields)
		if ok {
			if e, ok := rf["exhausted"]; ok {
				p.addAt(e.key, ruleBranchExhausted, "a branch has no exhausted event: when its last send goes unanswered the branch fails, and the join decides (else). Remove exhausted")
			}
			s.Retry = p.retryNumbers(f.val, rf)
		}
		good = good && s.Retry != nil
	}
	kind := expr.Value
	if f, ok := fields["for_each"]; ok {
		s.ForEach = p.expression(f.val, expr.List, false, "a list (for_each)")
		kind = expr.ItemValue
	}
	if f, ok := fields["payload"]; ok {
		s.Payload = p.mapping(f.val, kind, 0)
	}
	if !good {
		return nil
	}
	if f, ok := fields["compensate"]; ok {
		s.Compensate = p.compensation(f.val, "the compensation of the branch", s.To)
	}
	return s
}

// join reads a parallel step's join.
func (p *parser) join(n *yaml.Node) *Join {
	fields, ok := p.object(n, "the join", joinFields)
	if !ok {
		return nil
	}
	j := &Join{Pos: posOf(resolve(n))}
	good := true
	if f, ok := fields["policy"]; ok {
		s, ok := p.str(f.val, "all, first or at_least")
		switch pol := JoinPolicy(s); {
		case !ok:
			good = false
		case pol == JoinAll || pol == JoinFirst || pol == JoinAtLeast:
			j.Policy = pol
		default:
			msg := fmt.Sprintf("join policy `%s` is not one of all, first, at_least", clip(s))
			if sug := p.suggest(s, []string{"all", "first", "at_least"}); sug != "" {
				msg += fmt.Sprintf("; did you mean `%s`?", sug)
			}
			p.addAt(f.val, ruleJoinPolicy, "%s", msg)
			good = false
		}
	} else {
		good = false
	}
	if f, ok := fields["n"]; ok {
		if v, ok := p.integer(f.val, ruleJoinPolicy, "n"); ok {
			j.N = v
			switch {
			case j.Policy != "" && j.Policy != JoinAtLeast:
				p.addAt(f.key, ruleJoinPolicy, "n is only for policy: at_least (policy %s decides the number itself); remove n", j.Policy)
			case v < 1:
				p.addAt(f.val, ruleJoinPolicy, "n %d is out of range: at least 1 branch must succeed", v)
			}
		} else {
			good = false
		}
	} else if j.Policy == JoinAtLeast {
		p.addAt(n, ruleJoinPolicy, "policy: at_least needs n: how many branches must succeed, e.g. n: 2")
	}
	for _, k := range []string{"then", "else"} {
		f, ok := fields[k]
		if !ok {
			good = false
			continue
		}
		nm, ok := p.name(f.val, "event", upperSnake)
		good = good && ok
		if k == "then" {
			j.Then = nm
		} else {
			j.Else = nm
		}
	}
	if good && j.Then.Value == j.Else.Value {
		p.add(j.Else.Pos, ruleJoinPolicy, "then and else are both %s: the saga could not tell a finished step from a failed one; give them different names", j.Else.Value)
	}
	if !good {
		return nil
	}
	return j
}

// compensation reads a compensate mapping; def is who undoes when it has no
// `to` (the transition's by, or the send's to). It returns nil when the
// compensation is too broken to check further.
func (p *parser) compensation(n *yaml.Node, label string, def Name) *Compensation {
	fields, ok := p.object(n, label, compensateFields)
	if !ok {
		return nil
	}
	c := &Compensation{To: def, Pos: posOf(resolve(n))}
	good := true
	if f, ok := fields["to"]; ok {
		c.To, ok = p.name(f.val, "participant", participantName)
		c.toWritten = true
		good = good && ok
	}
	if f, ok := fields["command"]; ok {
		c.Command, ok = p.name(f.val, "command", upperSnake)
		good = good && ok
	} else {
		good = false
	}
	if f, ok := fields["done"]; ok {
		c.Done, ok = p.name(f.val, "event", upperSnake)
		good = good && ok
	} else {
		good = false
	}
	if f, ok := fields["retry"]; ok {
		rf, ok := p.object(f.val, "the retry policy of the compensation", compensateRetryFields)
		if ok {
			if e, ok := rf["exhausted"]; ok {
				p.addAt(e.key, ruleCompensateExhausted, "a compensation has no exhausted event: it never gives up into silence; past its attempts the saga stops as compensation_failed for an operator. Remove exhausted")
			}
			c.Retry = p.retryNumbers(f.val, rf)
		}
		good = good && c.Retry != nil
	}
	if !good {
		return nil
	}
	return c
}

func (p *parser) retry(n *yaml.Node) *Retry {
	fields, ok := p.object(n, "the retry policy", retryFields)
	if !ok {
		return nil
	}
	// Bad numbers are reported but do not hide the exhausted event from
	// the graph checks; only a missing or unreadable event does.
	r := p.retryNumbers(n, fields)
	if f, ok := fields["exhausted"]; ok {
		r.Exhausted, ok = p.name(f.val, "event", upperSnake)
		if !ok {
			return nil
		}
	} else {
		return nil
	}
	return r
}

// retryNumbers reads and checks attempts, backoff and max_backoff (which
// defaults to backoff) of the retry mapping n.
func (p *parser) retryNumbers(n *yaml.Node, fields map[string]pair) *Retry {
	r := &Retry{Pos: posOf(resolve(n))}
	if f, ok := fields["attempts"]; ok {
		if r.Attempts, ok = p.integer(f.val, ruleRetryRange, "attempts"); ok {
			if r.Attempts < minAttempts || r.Attempts > maxAttempts {
				p.addAt(f.val, ruleRetryRange, "attempts %d is out of range: it must be between %d and %d (sends in all, the first one included)", r.Attempts, minAttempts, maxAttempts)
			}
		}
	}
	backoffOK := false
	if f, ok := fields["backoff"]; ok {
		r.Backoff, backoffOK = p.duration(f.val, "backoff", ruleRetryRange, minBackoff, maxBackoff)
	}
	r.MaxBackoff = r.Backoff
	if f, ok := fields["max_backoff"]; ok {
		if r.MaxBackoff, ok = p.duration(f.val, "max_backoff", ruleRetryRange, minBackoff, maxBackoff); ok && backoffOK && r.MaxBackoff < r.Backoff {
			p.addAt(f.val, ruleRetryRange, "max_backoff %s is shorter than backoff %s: it must be at least the backoff", fmtDuration(r.MaxBackoff), fmtDuration(r.Backoff))
		}
	}
	return r
}

// collectStates gives every state mentioned anywhere an entry in
// def.States: declared ones keep their `states:` position, the others get
// the position of their first mention.
func (p *parser) collectStates(def *Definition) {
	p.declaredInStates = map[string]bool{}
	for name := range def.States {
		p.declaredInStates[name] = true
	}
	used := map[string]bool{}
	mention := func(n Name, inTransition bool) {
		if n.Value == "" {
			return
		}
		used[n.Value] = used[n.Value] || inTransition
		st, ok := def.States[n.Value]
		if !ok {
			def.States[n.Value] = &State{Name: n.Value, Pos: n.Pos}
			return
		}
		if !st.Declared && before(n.Pos, st.Pos) {
			st.Pos = n.Pos
		}
	}
	for _, t := range def.Transitions {
		for _, f := range t.From {
			mention(f, true)
		}
		mention(t.To, true)
	}
	for _, f := range def.Final {
		mention(f, false)
	}
	for _, f := range def.Failed {
		mention(f, false)
	}
	p.onlyDeclared = map[string]bool{}
	for name := range p.declaredInStates {
		if !used[name] {
			p.onlyDeclared[name] = true
		}
	}
}

func before(a, b Pos) bool {
	return a.Line < b.Line || (a.Line == b.Line && a.Col < b.Col)
}
