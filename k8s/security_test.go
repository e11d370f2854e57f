package k8s

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/portfolio-counselor/sagamachine/engine"
	"github.com/portfolio-counselor/sagamachine/engine/definition"
	"github.com/portfolio-counselor/sagamachine/engine/kafka"
	"github.com/portfolio-counselor/sagamachine/sagas"
)

// kafkaUsersSecret holds one password per principal of the saga bus.
const kafkaUsersSecret = "kafka-users"

// secretKeys returns the keys of Secret namespace/name.
func secretKeys(t *testing.T, objs []*object, namespace, name string) []string {
	t.Helper()
	o := find(objs, "Secret", namespace, name)
	if o == nil {
		t.Fatalf("no Secret %s/%s", namespace, name)
	}
	var data struct {
		Data       map[string]string `yaml:"data"`
		StringData map[string]string `yaml:"stringData"`
	}
	o.decode(t, &data)
	var keys []string
	for k := range data.Data {
		keys = append(keys, k)
	}
	for k := range data.StringData {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

func server(t *testing.T, objs []*object, cmd string) ourContainer {
	t.Helper()
	for _, oc := range ourContainers(t, objs) {
		if oc.obj.kind() == "Deployment" && oc.cmd == cmd {
			return oc
		}
	}
	t.Fatalf("no Deployment runs %s", cmd)
	return ourContainer{}
}

func envValue(oc ourContainer, name string) string {
	if e := oc.env(name); e != nil {
		return e.Value
	}
	return ""
}

// TestKafkaSetup: the Job kafka-setup runs saga-machine's setup step on
// the definitions saga-machine loads, with the admin's password from a
// Secret and the principals' passwords from the Secret the services read
// theirs from; the topics, group and user names it works with are the
// services' own; and the ACLs it makes (kafka.Policy, the code it runs)
// give each Deployment exactly what it consumes and produces, and no
// participant anything of another's.
func TestKafkaSetup(t *testing.T) {
	objs := manifests(t)
	var job *ourContainer
	for _, oc := range ourContainers(t, objs) {
		if oc.obj.kind() == "Job" && oc.subcommand() == "kafka-setup" {
			job = &oc
		}
	}
	if job == nil || job.cmd != "saga-machine" {
		t.Fatal("no Job runs saga-machine kafka-setup")
	}
	sm := server(t, objs, "saga-machine")
	for _, name := range []string{"SAGA_SERVER_TOPIC", "SAGA_GROUP", "SAGA_SAGAS_DIR"} {
		if got, want := envValue(*job, name), envValue(sm, name); got == "" || got != want {
			t.Errorf("%s: %s = %q, saga-machine's is %q: the setup must use the daemon's names", job, name, got, want)
		}
	}
	mounts := func(oc ourContainer) map[string]string { // mount path -> ConfigMap/Secret name
		vols := map[string]string{}
		for _, v := range oc.tpl.Spec.Volumes {
			switch {
			case v.ConfigMap != nil:
				vols[v.Name] = "ConfigMap/" + v.ConfigMap.Name
			case v.Secret != nil:
				vols[v.Name] = "Secret/" + v.Secret.SecretName
			}
		}
		out := map[string]string{}
		for _, m := range oc.c.VolumeMounts {
			out[m.MountPath] = vols[m.Name]
		}
		return out
	}
	jm := mounts(*job)
	if got := jm[envValue(*job, "SAGA_SAGAS_DIR")]; got != "ConfigMap/"+sagasConfigMapName {
		t.Errorf("%s: SAGA_SAGAS_DIR mounts %q, want ConfigMap/%s", job, got, sagasConfigMapName)
	}
	if got := jm[envValue(*job, "SAGA_KAFKA_USERS_DIR")]; got != "Secret/"+kafkaUsersSecret {
		t.Errorf("%s: SAGA_KAFKA_USERS_DIR mounts %q, want Secret/%s", job, got, kafkaUsersSecret)
	}
	if envValue(*job, "SAGA_KAFKA_USER") != "admin" {
		t.Errorf("%s: want SAGA_KAFKA_USER admin (the broker's super user)", job)
	}
	if pw := job.env("SAGA_KAFKA_PASSWORD"); pw == nil || pw.ValueFrom == nil || pw.ValueFrom.SecretKeyRef == nil {
		t.Errorf("%s: the admin password must come from a Secret", job)
	}
	if !slices.Contains(job.c.Args, "--partitions=3") {
		t.Errorf("%s: args %q, want --partitions=3", job, job.c.Args)
	}

	// The policy kafka-setup applies to the shipped definitions.
	defs, probs := definition.LoadDir(sagas.FS)
	if len(probs) > 0 {
		t.Fatalf("the shipped definitions do not load: %v", probs)
	}
	base, group := envValue(sm, "SAGA_SERVER_TOPIC"), envValue(sm, "SAGA_GROUP")
	pol := kafka.Policy{Orchestrator: "saga-machine", OrchestratorGroup: group}
	cmdTopic := map[string]string{}
	for _, d := range defs {
		for name, p := range d.Participants {
			if _, ok := cmdTopic[name]; !ok {
				cmdTopic[name] = p.Topic
				pol.Participants = append(pol.Participants, kafka.ParticipantAccess{Name: name, CommandTopic: p.Topic, EventTopic: engine.EventTopic(base, name)})
			}
		}
	}
	acls, err := pol.ACLs()
	if err != nil {
		t.Fatalf("policy: %v", err)
	}
	users, _ := pol.Users()
	slices.Sort(users)
	if got := secretKeys(t, objs, "default", kafkaUsersSecret); !slices.Equal(got, users) {
		t.Errorf("Secret %s has keys %v, want one per principal %v", kafkaUsersSecret, got, users)
	}
	has := func(principal, resource, name, op string) bool {
		return slices.Contains(acls, kafka.ACL{Principal: "User:" + principal, Resource: resource, Name: name, Operation: op})
	}
	// saga-machine: reads every event topic in its group, writes every command topic.
	if !has("saga-machine", kafka.ResourceGroup, group, kafka.OpRead) {
		t.Errorf("saga-machine may not use its group %s", group)
	}
	for p, topic := range cmdTopic {
		if !has("saga-machine", kafka.ResourceTopic, topic, kafka.OpWrite) || !has("saga-machine", kafka.ResourceTopic, engine.EventTopic(base, p), kafka.OpRead) {
			t.Errorf("saga-machine lacks WRITE %s or READ %s", topic, engine.EventTopic(base, p))
		}
	}
	// Each participant Deployment: its own topics and group, with its user name.
	for p := range cmdTopic {
		oc := server(t, objs, p)
		if envValue(oc, "SAGA_KAFKA_USER") != p {
			t.Errorf("%s: principal %q, want %q (the policy's user for %s)", oc, envValue(oc, "SAGA_KAFKA_USER"), p, p)
		}
		if !has(p, kafka.ResourceTopic, cmdTopic[p], kafka.OpRead) || !has(p, kafka.ResourceTopic, engine.EventTopic(base, p), kafka.OpWrite) ||
			!has(p, kafka.ResourceGroup, p, kafka.OpRead) {
			t.Errorf("participant %s lacks READ %s, WRITE %s or READ group %s", p, cmdTopic[p], engine.EventTopic(base, p), p)
		}
	}
	// Nobody else: only saga-machine writes command topics or reads event
	// topics; a participant touches no other participant's topic.
	for _, a := range acls {
		user := strings.TrimPrefix(a.Principal, "User:")
		if user == "saga-machine" || a.Resource != kafka.ResourceTopic {
			continue
		}
		if a.Name != cmdTopic[user] && a.Name != engine.EventTopic(base, user) {
			t.Errorf("ACL %s gives participant %s a topic that is not its own", a, user)
		}
		if (a.Name == cmdTopic[user] && a.Operation != kafka.OpRead) || (a.Name == engine.EventTopic(base, user) && a.Operation != kafka.OpWrite) {
			t.Errorf("ACL %s: a participant only reads its command topic and writes its event topic", a)
		}
	}
}

// TestKafkaBrokerAuthenticates: the broker has no unauthenticated listener,
// authorizes with ACLs, denies what no ACL allows, and takes the admin's
// password from a Secret; there is no ZooKeeper.
func TestKafkaBrokerAuthenticates(t *testing.T) {
	objs := manifests(t)
	o := find(objs, "StatefulSet", "integration", "kafka")
	if o == nil {
		t.Fatal("no StatefulSet integration/kafka")
	}
	var w workload
	o.decode(t, &w)
	env := map[string]envVar{}
	for _, e := range w.Spec.Template.Spec.Containers[0].Env {
		env[e.Name] = e
	}
	for _, l := range strings.Split(env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].Value, ",") {
		if _, proto, _ := strings.Cut(l, ":"); proto != "SASL_PLAINTEXT" && proto != "SASL_SSL" {
			t.Errorf("listener %s is not authenticated", l)
		}
	}
	for name, want := range map[string]string{
		"KAFKA_AUTHORIZER_CLASS_NAME":          "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
		"KAFKA_ALLOW_EVERYONE_IF_NO_ACL_FOUND": "false",
		"KAFKA_SUPER_USERS":                    "User:admin",
	} {
		if got := env[name].Value; got != want {
			t.Errorf("%s = %q, want %q", name, got, want)
		}
	}
	if !strings.Contains(env["KAFKA_SASL_ENABLED_MECHANISMS"].Value, "SCRAM-SHA-512") {
		t.Errorf("KAFKA_SASL_ENABLED_MECHANISMS = %q, want SCRAM-SHA-512 for the services", env["KAFKA_SASL_ENABLED_MECHANISMS"].Value)
	}
	if pw := env["KAFKA_ADMIN_PASSWORD"]; pw.ValueFrom == nil || pw.ValueFrom.SecretKeyRef == nil {
		t.Error("KAFKA_ADMIN_PASSWORD must come from a Secret")
	}
	for name, e := range env {
		if strings.Contains(e.Value, "password=") && !strings.Contains(e.Value, `password="$(KAFKA_ADMIN_PASSWORD)"`) {
			t.Errorf("%s holds a literal password", name)
		}
	}
	for _, o := range objs {
		if !podKinds[o.kind()] {
			continue
		}
		var w workload
		o.decode(t, &w)
		for _, c := range w.Spec.Template.Spec.Containers {
			if strings.Contains(strings.ToLower(c.Image), "zookeeper") {
				t.Errorf("%s runs %s: Kafka runs in KRaft mode, without ZooKeeper", o, c.Image)
			}
			for _, e := range c.Env {
				if strings.Contains(strings.ToLower(e.Name), "zookeeper") {
					t.Errorf("%s sets %s: Kafka runs in KRaft mode, without ZooKeeper", o, e.Name)
				}
			}
		}
	}
}

// TestPlaceholderSecrets: every Secret value is CHANGE_ME or a URL carrying
// it (the binaries refuse CHANGE_ME at start), except user names.
func TestPlaceholderSecrets(t *testing.T) {
	for _, o := range manifests(t) {
		if o.kind() != "Secret" {
			continue
		}
		var data struct {
			StringData map[string]string `yaml:"stringData"`
			Data       map[string]string `yaml:"data"`
		}
		o.decode(t, &data)
		if len(data.Data) > 0 {
			t.Errorf("%s: use stringData with CHANGE_ME placeholders, not data", o)
		}
		for k, v := range data.StringData {
			if strings.HasSuffix(k, "USERNAME") || strings.HasSuffix(k, "_USER") {
				continue
			}
			if !strings.Contains(v, "CHANGE_ME") {
				t.Errorf("%s: %s is %q, want the placeholder CHANGE_ME", o, k, v)
			}
		}
	}
}

// TestKeycloakRealm: the imported realm has the roles the services check
// and a client per API audience.
func TestKeycloakRealm(t *testing.T) {
	objs := manifests(t)
	cm := find(objs, "ConfigMap", "auth", "keycloak-realm")
	if cm == nil {
		t.Fatal("no ConfigMap auth/keycloak-realm")
	}
	var data struct {
		Data map[string]string `yaml:"data"`
	}
	cm.decode(t, &data)
	var realm struct {
		Realm string `json:"realm"`
		Roles struct {
			Realm []struct {
				Name string `json:"name"`
			} `json:"realm"`
		} `json:"roles"`
		Clients []struct {
			ClientID        string `json:"clientId"`
			ProtocolMappers []struct {
				Config map[string]string `json:"config"`
			} `json:"protocolMappers"`
		} `json:"clients"`
	}
	if err := json.Unmarshal([]byte(data.Data["portfolio-realm.json"]), &realm); err != nil {
		t.Fatalf("portfolio-realm.json: %v", err)
	}
	if realm.Realm != "portfolio" {
		t.Errorf("realm %q, want portfolio", realm.Realm)
	}
	var roles, clients, audiences []string
	for _, r := range realm.Roles.Realm {
		roles = append(roles, r.Name)
	}
	for _, c := range realm.Clients {
		clients = append(clients, c.ClientID)
		for _, m := range c.ProtocolMappers {
			if a := m.Config["included.client.audience"]; a != "" {
				audiences = append(audiences, a)
			}
		}
	}
	for _, r := range []string{"saga-operator", "saga-viewer", "funding-operator"} {
		if !slices.Contains(roles, r) {
			t.Errorf("realm roles %v lack %s", roles, r)
		}
	}
	for _, c := range []string{"saga-machine", "deals", "profile", "notification"} {
		if !slices.Contains(clients, c) || !slices.Contains(audiences, c) {
			t.Errorf("realm lacks client %s or an audience mapper for it (clients %v, audiences %v)", c, clients, audiences)
		}
	}
	kc := find(objs, "Deployment", "auth", "keycloak")
	var w workload
	kc.decode(t, &w)
	c := w.Spec.Template.Spec.Containers[0]
	if !slices.Contains(c.Args, "--import-realm") {
		t.Errorf("keycloak args %q lack --import-realm", c.Args)
	}
	imported := false
	for _, v := range w.Spec.Template.Spec.Volumes {
		for _, m := range c.VolumeMounts {
			if v.Name == m.Name && v.ConfigMap != nil && v.ConfigMap.Name == "keycloak-realm" && m.MountPath == "/opt/keycloak/data/import" {
				imported = true
			}
		}
	}
	if !imported {
		t.Error("keycloak does not mount keycloak-realm at /opt/keycloak/data/import")
	}
}

// --- NetworkPolicies ---------------------------------------------------

type (
	labelSelector struct {
		MatchLabels      map[string]string `yaml:"matchLabels"`
		MatchExpressions []struct {
			Key      string   `yaml:"key"`
			Operator string   `yaml:"operator"`
			Values   []string `yaml:"values"`
		} `yaml:"matchExpressions"`
	}
	netPeer struct {
		PodSelector       *labelSelector `yaml:"podSelector"`
		NamespaceSelector *labelSelector `yaml:"namespaceSelector"`
	}
	netRule struct {
		From  []netPeer `yaml:"from"`
		To    []netPeer `yaml:"to"`
		Ports []struct {
			Port any `yaml:"port"`
		} `yaml:"ports"`
	}
	netPolicy struct {
		ns   string
		name string
		Spec struct {
			PodSelector labelSelector `yaml:"podSelector"`
			PolicyTypes []string      `yaml:"policyTypes"`
			Ingress     []netRule     `yaml:"ingress"`
			Egress      []netRule     `yaml:"egress"`
		} `yaml:"spec"`
	}
	// pod is a pod of a workload: its namespace and labels.
	pod struct {
		ns     string
		labels map[string]string
		name   string
	}
)

func (s *labelSelector) matches(labels map[string]string) bool {
	if s == nil {
		return true
	}
	for k, v := range s.MatchLabels {
		if labels[k] != v {
			return false
		}
	}
	for _, e := range s.MatchExpressions {
		v, ok := labels[e.Key]
		switch e.Operator {
		case "In":
			if !ok || !slices.Contains(e.Values, v) {
				return false
			}
		case "NotIn":
			if ok && slices.Contains(e.Values, v) {
				return false
			}
		case "Exists":
			if !ok {
				return false
			}
		case "DoesNotExist":
			if ok {
				return false
			}
		default:
			return false
		}
	}
	return true
}

func (p netPeer) matches(policyNS string, q pod) bool {
	if p.NamespaceSelector == nil {
		return q.ns == policyNS && p.PodSelector.matches(q.labels)
	}
	return p.NamespaceSelector.matches(map[string]string{"kubernetes.io/metadata.name": q.ns}) && p.PodSelector.matches(q.labels)
}

func (r netRule) allowsPort(port int) bool {
	if len(r.Ports) == 0 {
		return true
	}
	for _, p := range r.Ports {
		if fmt.Sprint(p.Port) == fmt.Sprint(port) {
			return true
		}
	}
	return false
}

func netPolicies(t *testing.T, objs []*object) []netPolicy {
	t.Helper()
	var out []netPolicy
	for _, o := range objs {
		if o.kind() != "NetworkPolicy" {
			continue
		}
		var np netPolicy
		o.decode(t, &np)
		np.ns, np.name = o.namespace(), o.name()
		out = append(out, np)
	}
	return out
}

// allowed reports whether the policies let from open a connection to
// to:port (egress at from and ingress at to, each allowed when no policy
// of that direction selects the pod).
func allowed(pols []netPolicy, from, to pod, port int) bool {
	side := func(p pod, dir string, peer pod) bool {
		selected := false
		for _, np := range pols {
			if np.ns != p.ns || !np.Spec.PodSelector.matches(p.labels) || !slices.Contains(np.Spec.PolicyTypes, dir) {
				continue
			}
			selected = true
			rules := np.Spec.Ingress
			if dir == "Egress" {
				rules = np.Spec.Egress
			}
			for _, r := range rules {
				peers := r.From
				if dir == "Egress" {
					peers = r.To
				}
				for _, pr := range peers {
					if pr.matches(np.ns, peer) && r.allowsPort(port) {
						return true
					}
				}
			}
		}
		return !selected
	}
	return side(from, "Egress", to) && side(to, "Ingress", from)
}

// TestNetworkPolicies: a deny-by-default policy selects every pod in both
// directions, and exactly the needed connections are open.
func TestNetworkPolicies(t *testing.T) {
	objs := manifests(t)
	pols := netPolicies(t, objs)
	pods := map[string]pod{}
	for _, o := range objs {
		if !podKinds[o.kind()] {
			continue
		}
		var w workload
		o.decode(t, &w)
		p := pod{ns: o.namespace(), labels: w.Spec.Template.Metadata.Labels, name: o.kind() + " " + o.namespace() + "/" + o.name()}
		key := p.labels["app.kubernetes.io/name"]
		if p.labels["app.kubernetes.io/component"] == "migration" {
			key += "-migrate"
		}
		pods[key] = p
		for _, dir := range []string{"Ingress", "Egress"} {
			covered := false
			for _, np := range pols {
				if np.ns == p.ns && np.Spec.PodSelector.matches(p.labels) && slices.Contains(np.Spec.PolicyTypes, dir) {
					covered = true
				}
			}
			if !covered {
				t.Errorf("%s: no NetworkPolicy restricts its %s", p.name, dir)
			}
		}
	}
	ingressCtl := pod{ns: "ingress-nginx", labels: map[string]string{"app.kubernetes.io/name": "ingress-nginx"}, name: "ingress controller"}
	stranger := pod{ns: "default", labels: map[string]string{"app.kubernetes.io/name": "someone-else"}, name: "another pod in default"}
	get := func(key string) pod {
		p, ok := pods[key]
		if !ok {
			t.Fatalf("no pod %s", key)
		}
		return p
	}
	for _, tc := range []struct {
		from, to pod
		port     int
		want     bool
	}{
		{ingressCtl, get("keycloak"), 8080, true},
		{ingressCtl, get("oauth2-proxy"), 4180, true},
		{get("keycloak"), get("otus-pg"), 5432, true},
		{get("kafka-setup"), get("kafka"), 9092, true},
		{get("kafka-setup"), get("otus-pg"), 5432, false},
		{get("deals-migrate"), get("otus-pg"), 5432, true},
		{get("deals-migrate"), get("kafka"), 9092, false},
		{stranger, get("kafka"), 9092, false},
		{stranger, get("otus-pg"), 5432, false},
		{get("oauth2-proxy"), get("kafka"), 9092, false},
		{get("keycloak"), get("kafka"), 9092, false},
		{get("kafka"), get("otus-pg"), 5432, false},
		{ingressCtl, get("kafka"), 9092, false},
		{ingressCtl, get("otus-pg"), 5432, false},
	} {
		if got := allowed(pols, tc.from, tc.to, tc.port); got != tc.want {
			t.Errorf("%s -> %s:%d allowed = %v, want %v", tc.from.name, tc.to.name, tc.port, got, tc.want)
		}
	}
	for _, svc := range []string{"saga-machine", "deals", "profile", "notification"} {
		s := get(svc)
		for _, tc := range []struct {
			to   pod
			port int
		}{{get("otus-pg"), 5432}, {get("kafka"), 9092}, {get("keycloak"), 8080}} {
			if !allowed(pols, s, tc.to, tc.port) {
				t.Errorf("%s cannot reach %s:%d", s.name, tc.to.name, tc.port)
			}
		}
		if !allowed(pols, ingressCtl, s, 8080) {
			t.Errorf("the ingress controller cannot reach %s:8080", s.name)
		}
		if allowed(pols, stranger, s, 8080) {
			t.Errorf("any pod in default reaches %s:8080", s.name)
		}
		for _, other := range []string{"saga-machine", "deals", "profile", "notification"} {
			if other != svc && allowed(pols, s, get(other), 8080) {
				t.Errorf("%s reaches %s directly", s.name, other)
			}
		}
	}
}
