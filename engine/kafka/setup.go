package kafka

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// Resource types and operations of an ACL, as Kafka names them.
const (
	ResourceTopic   = "TOPIC"
	ResourceGroup   = "GROUP"
	ResourceCluster = "CLUSTER"

	OpRead     = "READ"
	OpWrite    = "WRITE"
	OpDescribe = "DESCRIBE"
	OpCreate   = "CREATE"
)

// DefaultOrchestratorUser is the principal (SCRAM user) of saga-machine.
const DefaultOrchestratorUser = "saga-machine"

// scramIterations is the SCRAM-SHA-512 iteration count of the users Setup
// writes (Kafka accepts 4096..16384).
const scramIterations = 8192

// ACL is one ALLOW rule for a literal resource name from any host.
// Everything no ACL allows is denied (the broker runs with
// allow.everyone.if.no.acl.found=false).
type ACL struct {
	// Principal is "User:<name>".
	Principal string
	// Resource is ResourceTopic, ResourceGroup or ResourceCluster.
	Resource string
	// Name is the topic or group name ("kafka-cluster" for the cluster).
	Name string
	// Operation is OpRead, OpWrite, OpDescribe, OpCreate, ...
	Operation string
}

// String is "User:deals READ TOPIC:DEALS_TOPIC".
func (a ACL) String() string {
	return a.Principal + " " + a.Operation + " " + a.Resource + ":" + a.Name
}

// ParticipantAccess is what one participant principal may do on the bus.
type ParticipantAccess struct {
	// Name is the participant name of the saga definitions. Required.
	Name string
	// User is its SCRAM user. Default Name.
	User string
	// CommandTopic is the topic saga-machine sends it commands on. Required.
	CommandTopic string
	// EventTopic is its own event topic (engine.EventTopic). Required.
	EventTopic string
	// Group is its consumer group. Default Name (the SDK's default).
	Group string
}

// Policy is the access policy of the saga bus: saga-machine alone writes
// the command topics and reads the event topics; each participant reads
// only its command topic and writes only its own event topic; each
// principal uses only its own consumer group. Nobody else may do anything.
type Policy struct {
	// Orchestrator is saga-machine's user. Default DefaultOrchestratorUser.
	Orchestrator string
	// OrchestratorGroup is saga-machine's consumer group. Default
	// "saga-machine".
	OrchestratorGroup string
	// Participants are the participants of the loaded definitions.
	Participants []ParticipantAccess
}

func (p Policy) withDefaults() (Policy, error) {
	if p.Orchestrator == "" {
		p.Orchestrator = DefaultOrchestratorUser
	}
	if p.OrchestratorGroup == "" {
		p.OrchestratorGroup = "saga-machine"
	}
	parts := make([]ParticipantAccess, len(p.Participants))
	owner := map[string]string{} // topic → who uses it for what
	use := func(topic, what string) error {
		if prev, ok := owner[topic]; ok {
			return fmt.Errorf("kafka policy: topic %s is both %s and %s", topic, prev, what)
		}
		owner[topic] = what
		return nil
	}
	users := map[string]string{p.Orchestrator: "saga-machine"}
	for i, a := range p.Participants {
		if a.Name == "" || a.CommandTopic == "" || a.EventTopic == "" {
			return p, fmt.Errorf("kafka policy: participant %d (%q) needs Name, CommandTopic and EventTopic", i, a.Name)
		}
		if a.User == "" {
			a.User = a.Name
		}
		if a.Group == "" {
			a.Group = a.Name
		}
		if prev, ok := users[a.User]; ok {
			return p, fmt.Errorf("kafka policy: user %s is both %s and participant %s: every participant needs its own principal", a.User, prev, a.Name)
		}
		users[a.User] = "participant " + a.Name
		if err := use(a.CommandTopic, "the command topic of "+a.Name); err != nil {
			return p, err
		}
		if err := use(a.EventTopic, "the event topic of "+a.Name); err != nil {
			return p, err
		}
		parts[i] = a
	}
	sort.Slice(parts, func(i, j int) bool { return parts[i].Name < parts[j].Name })
	p.Participants = parts
	return p, nil
}

// Users lists the principals' user names: saga-machine first, then the
// participants by name.
func (p Policy) Users() ([]string, error) {
	p, err := p.withDefaults()
	if err != nil {
		return nil, err
	}
	users := []string{p.Orchestrator}
	for _, a := range p.Participants {
		users = append(users, a.User)
	}
	return users, nil
}

// Topics lists every topic of the policy: the command topics and the event
// topics, sorted.
func (p Policy) Topics() ([]string, error) {
	p, err := p.withDefaults()
	if err != nil {
		return nil, err
	}
	var topics []string
	for _, a := range p.Participants {
		topics = append(topics, a.CommandTopic, a.EventTopic)
	}
	sort.Strings(topics)
	return topics, nil
}

// ACLs lists the ACLs that grant exactly the policy, sorted.
func (p Policy) ACLs() ([]ACL, error) {
	p, err := p.withDefaults()
	if err != nil {
		return nil, err
	}
	sm := "User:" + p.Orchestrator
	acls := []ACL{{sm, ResourceGroup, p.OrchestratorGroup, OpRead}}
	for _, a := range p.Participants {
		pr := "User:" + a.User
		acls = append(acls,
			ACL{sm, ResourceTopic, a.CommandTopic, OpWrite},
			ACL{sm, ResourceTopic, a.EventTopic, OpRead},
			ACL{pr, ResourceTopic, a.CommandTopic, OpRead},
			ACL{pr, ResourceTopic, a.EventTopic, OpWrite},
			ACL{pr, ResourceGroup, a.Group, OpRead},
		)
	}
	sortACLs(acls)
	return acls, nil
}

func sortACLs(acls []ACL) {
	sort.Slice(acls, func(i, j int) bool { return acls[i].String() < acls[j].String() })
}

// Setup is what ApplySetup makes true on a cluster.
type Setup struct {
	// Policy names the principals, topics and groups.
	Policy Policy
	// Partitions of the topics created when missing. Required.
	Partitions int32
	// ReplicationFactor of the topics created when missing; 0 or -1 means
	// the broker's default.
	ReplicationFactor int16
	// Passwords are the SCRAM-SHA-512 passwords to set, by user name; a
	// user of the policy without one keeps the credentials it has.
	Passwords map[string]string
}

// SetupResult tells what ApplySetup did.
type SetupResult struct {
	// CreatedTopics are the topics that did not exist.
	CreatedTopics []string
	// Users are the users whose credentials were set.
	Users []string
	// ACLs are the ACLs of the policy (created, or there already).
	ACLs []ACL
	// Removed are ALLOW ACLs of the policy's principals that the policy
	// does not grant (left over from an earlier policy), deleted.
	Removed []ACL
}

// ApplySetup creates the policy's missing topics, sets the SCRAM
// credentials of its users, creates its ACLs and deletes the ALLOW ACLs of
// its principals that it does not grant. It needs an administrator's
// credentials (a super user, or ALTER and CREATE on the cluster).
// Idempotent: running it again changes nothing but the credentials' salt.
func ApplySetup(ctx context.Context, cfg Config, s Setup) (SetupResult, error) {
	var res SetupResult
	cfg, err := cfg.withDefaults()
	if err != nil {
		return res, err
	}
	if s.Partitions <= 0 {
		return res, fmt.Errorf("kafka setup: partitions must be positive, got %d", s.Partitions)
	}
	pol, err := s.Policy.withDefaults()
	if err != nil {
		return res, err
	}
	users, _ := pol.Users()
	for u, pw := range s.Passwords {
		if !slices.Contains(users, u) {
			return res, fmt.Errorf("kafka setup: password given for %s, which is not a user of the policy %v", u, users)
		}
		if pw == "" {
			return res, fmt.Errorf("kafka setup: empty password for user %s", u)
		}
	}
	topics, _ := pol.Topics()
	acls, _ := pol.ACLs()
	res.ACLs = acls

	cl, err := kgo.NewClient(cfg.clientOpts()...)
	if err != nil {
		return res, fmt.Errorf("kafka setup: %w", err)
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)

	if res.CreatedTopics, err = createTopics(ctx, adm, s.Partitions, s.ReplicationFactor, topics); err != nil {
		return res, err
	}
	if res.Users, err = upsertUsers(ctx, adm, s.Passwords); err != nil {
		return res, err
	}
	if err := createACLs(ctx, cl, acls); err != nil {
		return res, err
	}
	if res.Removed, err = pruneACLs(ctx, cl, users, acls); err != nil {
		return res, err
	}
	return res, nil
}

func createTopics(ctx context.Context, adm *kadm.Client, partitions int32, rf int16, topics []string) ([]string, error) {
	if rf == 0 {
		rf = -1
	}
	resps, err := adm.CreateTopics(ctx, partitions, rf, nil, topics...)
	if err != nil {
		return nil, fmt.Errorf("kafka setup: create topics %v: %w", topics, err)
	}
	var created []string
	var errs []error
	for _, r := range resps.Sorted() {
		switch {
		case r.Err == nil:
			created = append(created, r.Topic)
		case errors.Is(r.Err, kerr.TopicAlreadyExists):
		default:
			errs = append(errs, fmt.Errorf("create topic %s: %w", r.Topic, r.Err))
		}
	}
	if len(errs) > 0 {
		return created, fmt.Errorf("kafka setup: %w", errors.Join(errs...))
	}
	return created, nil
}

func upsertUsers(ctx context.Context, adm *kadm.Client, passwords map[string]string) ([]string, error) {
	if len(passwords) == 0 {
		return nil, nil
	}
	var ups []kadm.UpsertSCRAM
	for u, pw := range passwords {
		ups = append(ups, kadm.UpsertSCRAM{User: u, Mechanism: kadm.ScramSha512, Iterations: scramIterations, Password: pw})
	}
	sort.Slice(ups, func(i, j int) bool { return ups[i].User < ups[j].User })
	altered, err := adm.AlterUserSCRAMs(ctx, nil, ups)
	if err == nil {
		err = altered.Error()
	}
	var names []string
	for _, u := range ups {
		names = append(names, u.User)
	}
	if err != nil {
		return nil, fmt.Errorf("kafka setup: set the SCRAM credentials of %v: %w", names, err)
	}
	if err := waitForUsers(ctx, adm, names); err != nil {
		return nil, err
	}
	return names, nil
}

// waitForUsers waits until the broker serves the SCRAM credentials of
// users (they reach it through the cluster metadata shortly after the
// controller accepted them), so that the users can log in as soon as
// ApplySetup returns.
func waitForUsers(ctx context.Context, adm *kadm.Client, users []string) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for {
		described, err := adm.DescribeUserSCRAMs(ctx, users...)
		missing := 0
		for _, u := range users {
			d, ok := described[u]
			if err != nil || !ok || d.Err != nil || !slices.ContainsFunc(d.CredInfos, func(c kadm.CredInfo) bool { return c.Mechanism == kadm.ScramSha512 }) {
				missing++
			}
		}
		if missing == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("kafka setup: the broker does not serve the credentials of %d of %v yet: %w (last error: %v)", missing, users, ctx.Err(), err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func (a ACL) kmsgTypes() (kmsg.ACLResourceType, kmsg.ACLOperation, error) {
	rt, err := kmsg.ParseACLResourceType(a.Resource)
	if err != nil {
		return 0, 0, fmt.Errorf("acl %s: %w", a, err)
	}
	op, err := kmsg.ParseACLOperation(a.Operation)
	if err != nil {
		return 0, 0, fmt.Errorf("acl %s: %w", a, err)
	}
	return rt, op, nil
}

func createACLs(ctx context.Context, cl *kgo.Client, acls []ACL) error {
	req := kmsg.NewPtrCreateACLsRequest()
	for _, a := range acls {
		rt, op, err := a.kmsgTypes()
		if err != nil {
			return fmt.Errorf("kafka setup: %w", err)
		}
		c := kmsg.NewCreateACLsRequestCreation()
		c.ResourceType, c.ResourceName, c.ResourcePatternType = rt, a.Name, kmsg.ACLResourcePatternTypeLiteral
		c.Principal, c.Host, c.Operation, c.PermissionType = a.Principal, "*", op, kmsg.ACLPermissionTypeAllow
		req.Creations = append(req.Creations, c)
	}
	resp, err := req.RequestWith(ctx, cl)
	if err != nil {
		return fmt.Errorf("kafka setup: create %d ACLs: %w", len(acls), err)
	}
	var errs []error
	for i, r := range resp.Results {
		if err := kerr.ErrorForCode(r.ErrorCode); err != nil {
			name := "?"
			if i < len(acls) {
				name = acls[i].String()
			}
			msg := ""
			if r.ErrorMessage != nil {
				msg = ": " + *r.ErrorMessage
			}
			errs = append(errs, fmt.Errorf("create ACL %s: %w%s", name, err, msg))
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("kafka setup: %w", errors.Join(errs...))
	}
	return nil
}

// DescribeACLs lists the ALLOW ACLs of the given users (any resource, any
// host), sorted. ACLs with another pattern than literal or another host than
// "*" are listed with the pattern or host appended to Name ("…(prefixed)",
// "…@host"), so that they never equal a policy ACL.
func DescribeACLs(ctx context.Context, cfg Config, users ...string) ([]ACL, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	cl, err := kgo.NewClient(cfg.clientOpts()...)
	if err != nil {
		return nil, fmt.Errorf("describe ACLs: %w", err)
	}
	defer cl.Close()
	got, _, err := describeACLs(ctx, cl, users)
	return got, err
}

// describeACLs returns the ALLOW ACLs of users and, index for index, the
// exact delete filters matching them.
func describeACLs(ctx context.Context, cl *kgo.Client, users []string) ([]ACL, []kmsg.DeleteACLsRequestFilter, error) {
	var out []ACL
	var filters []kmsg.DeleteACLsRequestFilter
	for _, u := range users {
		principal := "User:" + u
		req := kmsg.NewPtrDescribeACLsRequest()
		req.ResourceType = kmsg.ACLResourceTypeAny
		req.ResourcePatternType = kmsg.ACLResourcePatternTypeAny
		req.Principal = &principal
		req.Operation = kmsg.ACLOperationAny
		req.PermissionType = kmsg.ACLPermissionTypeAllow
		resp, err := req.RequestWith(ctx, cl)
		if err == nil {
			err = kerr.ErrorForCode(resp.ErrorCode)
		}
		if err != nil {
			return nil, nil, fmt.Errorf("describe the ACLs of %s: %w", principal, err)
		}
		for _, r := range resp.Resources {
			for _, a := range r.ACLs {
				name := r.ResourceName
				if r.ResourcePatternType != kmsg.ACLResourcePatternTypeLiteral {
					name += "(" + strings.ToLower(r.ResourcePatternType.String()) + ")"
				}
				if a.Host != "*" {
					name += "@" + a.Host
				}
				out = append(out, ACL{Principal: a.Principal, Resource: r.ResourceType.String(), Name: name, Operation: a.Operation.String()})
				f := kmsg.NewDeleteACLsRequestFilter()
				rn, pr, host := r.ResourceName, a.Principal, a.Host
				f.ResourceType, f.ResourceName, f.ResourcePatternType = r.ResourceType, &rn, r.ResourcePatternType
				f.Principal, f.Host, f.Operation, f.PermissionType = &pr, &host, a.Operation, a.PermissionType
				filters = append(filters, f)
			}
		}
	}
	idx := make([]int, len(out))
	for i := range idx {
		idx[i] = i
	}
	sort.Slice(idx, func(i, j int) bool { return out[idx[i]].String() < out[idx[j]].String() })
	sorted := make([]ACL, len(out))
	sortedF := make([]kmsg.DeleteACLsRequestFilter, len(out))
	for i, k := range idx {
		sorted[i], sortedF[i] = out[k], filters[k]
	}
	return sorted, sortedF, nil
}

// pruneACLs deletes the ALLOW ACLs of users that want does not list.
func pruneACLs(ctx context.Context, cl *kgo.Client, users []string, want []ACL) ([]ACL, error) {
	have, filters, err := describeACLs(ctx, cl, users)
	if err != nil {
		return nil, fmt.Errorf("kafka setup: %w", err)
	}
	keep := map[ACL]bool{}
	for _, a := range want {
		keep[a] = true
	}
	req := kmsg.NewPtrDeleteACLsRequest()
	var removed []ACL
	for i, a := range have {
		if !keep[a] {
			removed = append(removed, a)
			req.Filters = append(req.Filters, filters[i])
		}
	}
	if len(removed) == 0 {
		return nil, nil
	}
	resp, err := req.RequestWith(ctx, cl)
	if err != nil {
		return nil, fmt.Errorf("kafka setup: delete %d stale ACLs: %w", len(removed), err)
	}
	for i, r := range resp.Results {
		if err := kerr.ErrorForCode(r.ErrorCode); err != nil {
			return nil, fmt.Errorf("kafka setup: delete stale ACL %s: %w", removed[min(i, len(removed)-1)], err)
		}
	}
	return removed, nil
}
