package k8s

import (
	"encoding/json"
	"fmt"
	"maps"
	"net"
	"os"
	"path"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

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

// --- Transport encryption and the scrape token ---------------------------

const (
	// kafkaTLSSecret (namespace integration) holds the broker's key,
	// certificate and CA; kafkaCASecret (namespace default) the CA the
	// clients verify the broker with.
	kafkaTLSSecret = "kafka-tls"
	kafkaCASecret  = "kafka-ca"
	kafkaCAKey     = "ca.crt"
	// metricsSecret holds the bearer token of GET /metrics.
	metricsSecret = "saga-metrics-token"
	// scrapeFile is the Prometheus scrape configuration of the services.
	scrapeFile = "monitoring/saga-machine.scrape.yaml"
	// prometheusSecretsDir is where the Prometheus Operator mounts the
	// Secrets of prometheusSpec.secrets (/etc/prometheus/secrets/<name>/).
	prometheusSecretsDir = "/etc/prometheus/secrets"
)

// secretFile tells which Secret key the file a container reads comes
// from, following its volume mounts (the longest mount path holding the
// file; a subPath mount; the volume's items). A file that is on no Secret
// volume is an error.
// mountOf is the volume mount of c that holds the absolute, clean path
// file (the deepest one), or nil.
func mountOf(c container, file string) *volumeMount {
	var mount *volumeMount
	for i, m := range c.VolumeMounts {
		mp := path.Clean(m.MountPath)
		if (file == mp || strings.HasPrefix(file, mp+"/")) && (mount == nil || len(mp) > len(path.Clean(mount.MountPath))) {
			mount = &c.VolumeMounts[i]
		}
	}
	return mount
}

func secretFile(tpl podTemplate, c container, file string) (secret, key string, err error) {
	file = path.Clean(file)
	if !path.IsAbs(file) {
		return "", "", fmt.Errorf("%s is not an absolute path", file)
	}
	mount := mountOf(c, file)
	if mount == nil {
		return "", "", fmt.Errorf("%s is on no volume mount of container %s", file, c.Name)
	}
	rel := strings.TrimPrefix(strings.TrimPrefix(file, path.Clean(mount.MountPath)), "/")
	if mount.SubPath != "" {
		if rel != "" {
			return "", "", fmt.Errorf("%s lies under the subPath mount %s, which is a single file", file, mount.MountPath)
		}
		rel = mount.SubPath
	}
	if rel == "" {
		return "", "", fmt.Errorf("%s is the mount point of volume %s, not a file in it", file, mount.Name)
	}
	for _, v := range tpl.Spec.Volumes {
		if v.Name != mount.Name {
			continue
		}
		if v.Secret == nil {
			return "", "", fmt.Errorf("%s is on volume %s, which is not a Secret volume", file, v.Name)
		}
		if len(v.Secret.Items) == 0 {
			if strings.Contains(rel, "/") {
				return "", "", fmt.Errorf("%s: Secret %s has no directory %s", file, v.Secret.SecretName, path.Dir(rel))
			}
			return v.Secret.SecretName, rel, nil
		}
		for _, it := range v.Secret.Items {
			if path.Clean(it.Path) == rel {
				return v.Secret.SecretName, it.Key, nil
			}
		}
		return "", "", fmt.Errorf("%s: no item of Secret volume %s is placed at %s", file, v.Name, rel)
	}
	return "", "", fmt.Errorf("%s: container %s mounts volume %s, which the pod does not define", file, c.Name, mount.Name)
}

// TestSecretFile: secretFile follows mounts, items and subPaths, and
// refuses a file no Secret provides.
func TestSecretFile(t *testing.T) {
	var tpl podTemplate
	tpl.Spec.Volumes = []volume{
		{Name: "ca"},
		{Name: "items"},
		{Name: "cfg"},
	}
	tpl.Spec.Volumes[0].Secret = &struct {
		SecretName string      `yaml:"secretName"`
		Items      []keyToPath `yaml:"items"`
	}{SecretName: "kafka-ca"}
	tpl.Spec.Volumes[1].Secret = &struct {
		SecretName string      `yaml:"secretName"`
		Items      []keyToPath `yaml:"items"`
	}{SecretName: "tok", Items: []keyToPath{{Key: "token", Path: "sub/t"}}}
	tpl.Spec.Volumes[2].ConfigMap = &struct {
		Name string `yaml:"name"`
	}{Name: "cfg"}
	c := container{Name: "app", VolumeMounts: []volumeMount{
		{Name: "ca", MountPath: "/etc/ca"},
		{Name: "items", MountPath: "/etc/tok/"},
		{Name: "cfg", MountPath: "/etc/cfg"},
		{Name: "ca", MountPath: "/etc/one.crt", SubPath: "ca.crt"},
		{Name: "gone", MountPath: "/etc/gone"},
	}}
	for _, tc := range []struct {
		file, secret, key, err string
	}{
		{"/etc/ca/ca.crt", "kafka-ca", "ca.crt", ""},
		{"/etc/ca/../ca/ca.crt", "kafka-ca", "ca.crt", ""},
		{"/etc/tok/sub/t", "tok", "token", ""},
		{"/etc/one.crt", "kafka-ca", "ca.crt", ""},
		{"/etc/tok/token", "", "", "no item"},
		{"/etc/ca/x/ca.crt", "", "", "no directory"},
		{"/etc/cfg/ca.crt", "", "", "not a Secret volume"},
		{"/etc/other/ca.crt", "", "", "no volume mount"},
		{"/etc/ca", "", "", "mount point"},
		{"/etc/gone/x", "", "", "does not define"},
		{"ca.crt", "", "", "not an absolute path"},
	} {
		secret, key, err := secretFile(tpl, c, tc.file)
		switch {
		case tc.err == "" && (err != nil || secret != tc.secret || key != tc.key):
			t.Errorf("secretFile(%s) = %q, %q, %v; want %q, %q", tc.file, secret, key, err, tc.secret, tc.key)
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("secretFile(%s) = %q, %q, %v; want an error containing %q", tc.file, secret, key, err, tc.err)
		}
	}
}

// brokerProperty is the server property the apache/kafka image makes of
// the variable name (its KafkaDockerWrapper: drop KAFKA_, lower case, _ is
// ., ___ is -, __ is _); ok is false for the variables it does not turn
// into properties.
func brokerProperty(name string) (string, bool) {
	rest, ok := strings.CutPrefix(name, "KAFKA_")
	if !ok || slices.Contains([]string{"KAFKA_VERSION", "KAFKA_HEAP_OPT", "KAFKA_LOG4J_OPTS", "KAFKA_OPTS", "KAFKA_JMX_OPTS",
		"KAFKA_JVM_PERFORMANCE_OPTS", "KAFKA_GC_LOG_OPTS", "KAFKA_LOG4J_ROOT_LOGLEVEL", "KAFKA_LOG4J_LOGGERS",
		"KAFKA_TOOLS_LOG4J_LOGLEVEL", "KAFKA_JMX_HOSTNAME"}, name) {
		return "", false
	}
	p := strings.ReplaceAll(strings.ToLower(rest), "_", ".")
	p = strings.ReplaceAll(p, "...", "-")
	return strings.ReplaceAll(p, "..", "_"), true
}

// endpoint is one listener of listeners or advertised.listeners.
type endpoint struct{ name, host, port string }

func endpoints(tb testing.TB, prop, v string) []endpoint {
	tb.Helper()
	var out []endpoint
	for _, l := range strings.Split(v, ",") {
		name, addr, ok := strings.Cut(strings.TrimSpace(l), "://")
		host, port, err := net.SplitHostPort(addr)
		if !ok || err != nil || name == "" || port == "" {
			tb.Fatalf("%s: %q is not NAME://host:port", prop, l)
		}
		out = append(out, endpoint{name, host, port})
	}
	return out
}

// TestBrokerProperty: the variable names map to the properties as the
// image maps them.
func TestBrokerProperty(t *testing.T) {
	for env, want := range map[string]string{
		"KAFKA_LISTENER_NAME_CLIENT_SCRAM___SHA___512_SASL_JAAS_CONFIG": "listener.name.client.scram-sha-512.sasl.jaas.config",
		"KAFKA_LISTENER_NAME_SASL__SSL_SSL_KEYSTORE_TYPE":               "listener.name.sasl_ssl.ssl.keystore.type",
		"KAFKA_LISTENER_SECURITY_PROTOCOL_MAP":                          "listener.security.protocol.map",
		"KAFKA_ADMIN_PASSWORD":                                          "admin.password",
		"KAFKA_OPTS":                                                    "",
		"CLUSTER_ID":                                                    "",
	} {
		if got, ok := brokerProperty(env); got != want || ok != (want != "") {
			t.Errorf("brokerProperty(%s) = %q, %v; want %q", env, got, ok, want)
		}
	}
}

// kafkaBroker is the broker's pod template, its container kafka and the
// server properties its variables make.
func kafkaBroker(t *testing.T, objs []*object) (podTemplate, container, map[string]string) {
	t.Helper()
	o := find(objs, "StatefulSet", "integration", "kafka")
	if o == nil {
		t.Fatal("no StatefulSet integration/kafka")
	}
	var w workload
	o.decode(t, &w)
	for _, c := range w.Spec.Template.Spec.Containers {
		if c.Name != "kafka" {
			continue
		}
		props := map[string]string{}
		for _, e := range c.Env {
			if p, ok := brokerProperty(e.Name); ok {
				props[p] = e.Value
			}
		}
		return w.Spec.Template, c, props
	}
	t.Fatalf("%s has no container kafka", o)
	return podTemplate{}, container{}, nil
}

// TestKafkaBrokerTLS: every listener a client or another broker reaches is
// SASL_SSL, with the key and certificate of the Secret kafka-tls; a
// listener without TLS (the controller's) is bound to the loopback and not
// advertised; the bootstrap address the services are given is such a
// listener, under the name the certificate must carry.
func TestKafkaBrokerTLS(t *testing.T) {
	objs := manifests(t)
	tpl, kc, props := kafkaBroker(t, objs)

	protocols := map[string]string{}
	for _, m := range strings.Split(props["listener.security.protocol.map"], ",") {
		name, proto, ok := strings.Cut(strings.TrimSpace(m), ":")
		if !ok {
			t.Fatalf("listener.security.protocol.map: %q is not NAME:PROTOCOL", m)
		}
		protocols[name] = proto
	}
	controllers := strings.Split(props["controller.listener.names"], ",")
	listeners := endpoints(t, "listeners", props["listeners"])
	advertised := endpoints(t, "advertised.listeners", props["advertised.listeners"])
	var tlsListener string
	for _, l := range listeners {
		proto, ok := protocols[l.name]
		switch {
		case !ok:
			t.Errorf("listener %s has no security protocol in listener.security.protocol.map", l.name)
		case proto == "SASL_SSL":
			tlsListener = l.name
		case !slices.Contains(controllers, l.name):
			t.Errorf("listener %s is %s: every listener but the controller's must be SASL_SSL", l.name, proto)
		case !slices.Contains([]string{"localhost", "127.0.0.1", "::1"}, l.host):
			t.Errorf("controller listener %s is %s on %q: without TLS it must be bound to the loopback", l.name, proto, l.host)
		}
	}
	if tlsListener == "" {
		t.Fatalf("no SASL_SSL listener in listeners %q", props["listeners"])
	}
	for _, a := range advertised {
		if protocols[a.name] != "SASL_SSL" {
			t.Errorf("advertised listener %s is %q, want SASL_SSL: clients connect to what is advertised", a.name, protocols[a.name])
		}
	}
	if ib := props["inter.broker.listener.name"]; protocols[ib] != "SASL_SSL" {
		t.Errorf("inter.broker.listener.name %q is %q, want a SASL_SSL listener", ib, protocols[ib])
	}
	// The apache/kafka image's start script refuses to start when the
	// advertised listeners contain SSL:// (it then wants JKS files under
	// /etc/kafka/secrets and overwrites the keystore location) or
	// SASL_...:// (it then wants a JAAS file in KAFKA_OPTS).
	if adv := props["advertised.listeners"]; strings.Contains(adv, "SSL://") || regexp.MustCompile(`SASL_.*://`).MatchString(adv) {
		t.Errorf("advertised.listeners %q: name the listeners without SSL:// or SASL_...:// (the image's start script)", adv)
	}

	// The bootstrap address of the services: an advertised SASL_SSL
	// endpoint, so that the first connection is TLS too and the host the
	// clients verify is the one the certificate must name.
	cfg := find(objs, "ConfigMap", "default", "saga-config")
	if cfg == nil {
		t.Fatal("no ConfigMap default/saga-config")
	}
	var data struct {
		Data map[string]string `yaml:"data"`
	}
	cfg.decode(t, &data)
	for _, b := range strings.Split(data.Data["SAGA_KAFKA_BROKERS"], ",") {
		host, port, err := net.SplitHostPort(strings.TrimSpace(b))
		if err != nil {
			t.Fatalf("SAGA_KAFKA_BROKERS: %q: %v", b, err)
		}
		if !slices.Contains(advertised, endpoint{tlsListener, host, port}) {
			t.Errorf("SAGA_KAFKA_BROKERS %s is not the advertised SASL_SSL endpoint (%q)", b, props["advertised.listeners"])
		}
		for _, l := range listeners {
			if l.port == port && protocols[l.name] != "SASL_SSL" {
				t.Errorf("SAGA_KAFKA_BROKERS %s reaches listener %s on port %s, which is %s", b, l.name, port, protocols[l.name])
			}
		}
	}

	// Authentication on the TLS listener: SCRAM for the services, PLAIN
	// for admin, each with its JAAS settings on that listener.
	lp := "listener.name." + strings.ToLower(tlsListener) + "."
	mechs := strings.Split(props["sasl.enabled.mechanisms"], ",")
	if v, ok := props[lp+"sasl.enabled.mechanisms"]; ok {
		mechs = strings.Split(v, ",")
	}
	for _, m := range []string{"SCRAM-SHA-512", "PLAIN"} {
		if !slices.Contains(mechs, m) {
			t.Errorf("listener %s does not enable %s (mechanisms %q)", tlsListener, m, mechs)
		}
		if props[lp+strings.ToLower(m)+".sasl.jaas.config"] == "" {
			t.Errorf("listener %s: no %s%s.sasl.jaas.config", tlsListener, lp, strings.ToLower(m))
		}
	}

	// TLS of that listener: a PEM keystore without a password, written
	// from the Secret kafka-tls by an init container, and a PEM
	// truststore (ca.crt of the same Secret) for broker-to-broker.
	setting := func(name string) string {
		if v, ok := props[lp+name]; ok {
			return v
		}
		return props[name]
	}
	if got := setting("ssl.keystore.type"); got != "PEM" {
		t.Errorf("listener %s: ssl.keystore.type %q, want PEM", tlsListener, got)
	}
	if got := setting("ssl.truststore.type"); got != "PEM" {
		t.Errorf("listener %s: ssl.truststore.type %q, want PEM", tlsListener, got)
	}
	for _, name := range []string{"ssl.keystore.password", "ssl.key.password", "ssl.truststore.password"} {
		if setting(name) != "" {
			t.Errorf("listener %s sets %s: Kafka refuses a password with PEM stores (the key is unencrypted PKCS#8)", tlsListener, name)
		}
	}
	if ca := setting("ssl.truststore.location"); ca == "" {
		t.Errorf("listener %s has no ssl.truststore.location: broker-to-broker TLS would trust the JVM's CAs only", tlsListener)
	} else if secret, key, err := secretFile(tpl, kc, ca); err != nil || secret != kafkaTLSSecret || key != kafkaCAKey {
		t.Errorf("listener %s: ssl.truststore.location %s is Secret %q key %q (%v), want %s key %s", tlsListener, ca, secret, key, err, kafkaTLSSecret, kafkaCAKey)
	}
	keystore := setting("ssl.keystore.location")
	if keystore == "" {
		t.Fatalf("listener %s has no ssl.keystore.location", tlsListener)
	}
	// The keystore file lies on a volume the init container writes it to,
	// from the Secret's tls.key and tls.crt.
	var ksMount *volumeMount
	for i, m := range kc.VolumeMounts {
		if strings.HasPrefix(keystore, path.Clean(m.MountPath)+"/") {
			ksMount = &kc.VolumeMounts[i]
		}
	}
	if ksMount == nil {
		t.Fatalf("ssl.keystore.location %s is on no volume of the kafka container", keystore)
	}
	rel := strings.TrimPrefix(keystore, path.Clean(ksMount.MountPath)+"/")
	writers := 0
	for _, ic := range tpl.Spec.InitContainers {
		script := strings.Join(append(slices.Clone(ic.Command), ic.Args...), " ")
		var out, tlsDir string
		for _, m := range ic.VolumeMounts {
			if m.Name == ksMount.Name {
				out = path.Join(m.MountPath, rel)
			}
			for _, v := range tpl.Spec.Volumes {
				if v.Name == m.Name && v.Secret != nil && v.Secret.SecretName == kafkaTLSSecret && len(v.Secret.Items) == 0 {
					tlsDir = path.Clean(m.MountPath)
				}
			}
		}
		var write string // the command line that writes the keystore
		for _, line := range strings.Split(script, "\n") {
			if strings.Contains(line, "> "+out) {
				write = line
			}
		}
		if out == "" || write == "" {
			continue
		}
		writers++
		if tlsDir == "" || !strings.Contains(write, tlsDir+"/tls.key") || !strings.Contains(write, tlsDir+"/tls.crt") {
			t.Errorf("init container %s writes %s with %q, not from tls.key and tls.crt of the mounted Secret %s", ic.Name, out, strings.TrimSpace(write), kafkaTLSSecret)
		}
		if !strings.Contains(script, "CHANGE_ME") {
			t.Errorf("init container %s does not refuse the placeholder CHANGE_ME", ic.Name)
		}
	}
	if writers != 1 {
		t.Errorf("%d init containers write the keystore %s (volume %s) from Secret %s, want 1", writers, keystore, ksMount.Name, kafkaTLSSecret)
	}
	if got := secretKeys(t, objs, "integration", kafkaTLSSecret); !slices.Equal(got, []string{"ca.crt", "tls.crt", "tls.key"}) {
		t.Errorf("Secret integration/%s has keys %q, want ca.crt, tls.crt, tls.key", kafkaTLSSecret, got)
	}
}

// TestKafkaClientsUseTLS: every process of ours that talks to Kafka (the
// four Deployments and the Job kafka-setup, which sends admin's password
// with PLAIN) connects with TLS and verifies the broker with the CA of the
// Secret kafka-ca, mounted into its pod; nothing turns TLS off.
func TestKafkaClientsUseTLS(t *testing.T) {
	objs := manifests(t)
	var clients []string
	for _, oc := range ourContainers(t, objs) {
		if oc.env("SAGA_KAFKA_BROKERS") == nil {
			continue
		}
		clients = append(clients, oc.obj.kind()+"/"+oc.obj.name())
		ca := oc.env("SAGA_KAFKA_TLS_CA_FILE")
		if ca == nil || ca.Value == "" {
			t.Errorf("%s: no SAGA_KAFKA_TLS_CA_FILE: it would talk to Kafka without TLS", oc)
			continue
		}
		secret, key, err := secretFile(oc.tpl, oc.c, ca.Value)
		if err != nil || secret != kafkaCASecret || key != kafkaCAKey {
			t.Errorf("%s: SAGA_KAFKA_TLS_CA_FILE %s is Secret %q key %q (%v), want Secret %s key %s", oc, ca.Value, secret, key, err, kafkaCASecret, kafkaCAKey)
		}
		if e := oc.env("SAGA_KAFKA_TLS"); e != nil {
			if on, err := strconv.ParseBool(e.Value); err != nil || !on {
				t.Errorf("%s: SAGA_KAFKA_TLS=%q: leave it unset (the CA file turns TLS on) or true", oc, e.Value)
			}
		}
		for _, a := range append(slices.Clone(oc.c.Command), oc.c.Args...) {
			if name, ok := flagName(a); ok && (name == "kafka-tls" || name == "kafka-tls-ca-file") {
				t.Errorf("%s passes %s: the TLS settings come from SAGA_KAFKA_TLS_CA_FILE only", oc, a)
			}
		}
	}
	slices.Sort(clients)
	want := []string{"Deployment/deals", "Deployment/notification", "Deployment/profile", "Deployment/saga-machine", "Job/kafka-setup"}
	if !slices.Equal(clients, want) {
		t.Errorf("the Kafka clients are %q, want %q", clients, want)
	}
	if got := secretKeys(t, objs, "default", kafkaCASecret); !slices.Equal(got, []string{kafkaCAKey}) {
		t.Errorf("Secret default/%s has keys %q, want [%s]", kafkaCASecret, got, kafkaCAKey)
	}
}

// scrapeConfig is the part of a Prometheus scrape configuration file the
// tests read.
type scrapeConfig struct {
	ScrapeConfigs []struct {
		JobName       string `yaml:"job_name"`
		Scheme        string `yaml:"scheme"`
		MetricsPath   string `yaml:"metrics_path"`
		Authorization *struct {
			Type            string `yaml:"type"`
			Credentials     string `yaml:"credentials"`
			CredentialsFile string `yaml:"credentials_file"`
		} `yaml:"authorization"`
		BearerToken     string `yaml:"bearer_token"`
		BearerTokenFile string `yaml:"bearer_token_file"`
		BasicAuth       any    `yaml:"basic_auth"`
		KubernetesSD    []struct {
			Role       string `yaml:"role"`
			Namespaces struct {
				Names []string `yaml:"names"`
			} `yaml:"namespaces"`
		} `yaml:"kubernetes_sd_configs"`
		RelabelConfigs []relabelConfig `yaml:"relabel_configs"`
	} `yaml:"scrape_configs"`
}

type relabelConfig struct {
	SourceLabels []string `yaml:"source_labels"`
	Separator    *string  `yaml:"separator"`
	Regex        *string  `yaml:"regex"`
	Action       string   `yaml:"action"`
	TargetLabel  string   `yaml:"target_label"`
}

// relabel applies Prometheus' relabeling to a target's labels as far as
// it decides whether the target is kept (keep, drop; replace and labelmap
// into labels that are not meta labels only add labels). It fails on
// what it does not emulate.
func relabel(tb testing.TB, cfgs []relabelConfig, labels map[string]string) bool {
	tb.Helper()
	for _, rc := range cfgs {
		sep := ";"
		if rc.Separator != nil {
			sep = *rc.Separator
		}
		re := "(.*)"
		if rc.Regex != nil {
			re = *rc.Regex
		}
		rx, err := regexp.Compile("^(?s:" + re + ")$")
		if err != nil {
			tb.Fatalf("relabel regex %q: %v", re, err)
		}
		var vals []string
		for _, l := range rc.SourceLabels {
			vals = append(vals, labels[l])
		}
		matched := rx.MatchString(strings.Join(vals, sep))
		switch strings.ToLower(rc.Action) {
		case "keep":
			if !matched {
				return false
			}
		case "drop":
			if matched {
				return false
			}
		case "", "replace":
			if strings.HasPrefix(rc.TargetLabel, "__") {
				tb.Fatalf("relabel: replace into %s is not emulated (it may change the target)", rc.TargetLabel)
			}
		default:
			tb.Fatalf("relabel: action %q is not emulated", rc.Action)
		}
	}
	return true
}

// labelName is Prometheus' sanitized label name.
func labelName(s string) string {
	return regexp.MustCompile(`[^a-zA-Z0-9_]`).ReplaceAllString(s, "_")
}

// podTargets are the targets Prometheus' Kubernetes discovery (role pod)
// makes of the workloads in namespaces (all when empty): one per container
// port, one per container without a port, with their meta labels.
func podTargets(t *testing.T, objs []*object, namespaces []string) []map[string]string {
	t.Helper()
	var out []map[string]string
	for _, o := range objs {
		if !podKinds[o.kind()] || (len(namespaces) > 0 && !slices.Contains(namespaces, o.namespace())) {
			continue
		}
		var w workload
		o.decode(t, &w)
		base := map[string]string{
			"__meta_kubernetes_namespace": o.namespace(),
			"__meta_kubernetes_pod_name":  o.name() + "-x", // the workload's kind and name, for the messages
			"workload":                    o.kind() + "/" + o.name(),
		}
		for k, v := range w.Spec.Template.Metadata.Labels {
			base["__meta_kubernetes_pod_label_"+labelName(k)] = v
			base["__meta_kubernetes_pod_labelpresent_"+labelName(k)] = "true"
		}
		for k, v := range w.Spec.Template.Metadata.Annotations {
			base["__meta_kubernetes_pod_annotation_"+labelName(k)] = v
			base["__meta_kubernetes_pod_annotationpresent_"+labelName(k)] = "true"
		}
		add := func(c container, init bool) {
			lab := maps.Clone(base)
			lab["__meta_kubernetes_pod_container_name"] = c.Name
			lab["__meta_kubernetes_pod_container_init"] = strconv.FormatBool(init)
			if len(c.Ports) == 0 {
				out = append(out, lab)
				return
			}
			for _, p := range c.Ports {
				pl := maps.Clone(lab)
				pl["__meta_kubernetes_pod_container_port_name"] = p.Name
				pl["__meta_kubernetes_pod_container_port_number"] = strconv.Itoa(p.ContainerPort)
				out = append(out, pl)
			}
		}
		for _, c := range w.Spec.Template.Spec.InitContainers {
			add(c, true)
		}
		for _, c := range w.Spec.Template.Spec.Containers {
			add(c, false)
		}
	}
	return out
}

func readScrapeConfig(t *testing.T) scrapeConfig {
	t.Helper()
	data, err := os.ReadFile(scrapeFile)
	if err != nil {
		t.Fatal(err)
	}
	var sc scrapeConfig
	if err := yaml.Unmarshal(data, &sc); err != nil {
		t.Fatalf("parse %s: %v", scrapeFile, err)
	}
	if len(sc.ScrapeConfigs) == 0 {
		t.Fatalf("%s holds no scrape_configs", scrapeFile)
	}
	return sc
}

// TestMetricsToken: /metrics of the four services needs the scrape token:
// each Deployment points SAGA_METRICS_TOKEN_FILE at the key of the Secret
// saga-metrics-token mounted into its pod; no pod invites an
// annotation-based scrape (which would carry no token); and the scrape job
// of monitoring/ sends the same Secret's key as a bearer token to exactly
// the four services' HTTP ports, which the NetworkPolicies let Prometheus
// reach. The Secret is mounted as a directory, not by subPath, so that a
// rotated token reaches the running services.
func TestMetricsToken(t *testing.T) {
	objs := manifests(t)
	var tokenKey string
	servers := map[string]bool{}
	for _, oc := range ourContainers(t, objs) {
		if oc.obj.kind() != "Deployment" {
			continue
		}
		servers[oc.obj.name()] = true
		f := oc.env("SAGA_METRICS_TOKEN_FILE")
		if f == nil || f.Value == "" {
			t.Errorf("%s: no SAGA_METRICS_TOKEN_FILE: its /metrics would be open", oc)
			continue
		}
		secret, key, err := secretFile(oc.tpl, oc.c, f.Value)
		if err != nil || secret != metricsSecret {
			t.Errorf("%s: SAGA_METRICS_TOKEN_FILE %s is Secret %q key %q (%v), want a key of Secret %s", oc, f.Value, secret, key, err, metricsSecret)
			continue
		}
		if !slices.Contains(secretKeys(t, objs, oc.obj.namespace(), metricsSecret), key) {
			t.Errorf("%s: SAGA_METRICS_TOKEN_FILE %s is key %s, which Secret %s lacks", oc, f.Value, key, metricsSecret)
		}
		// The services read the file again when it changes (token rotation
		// without a restart); the kubelet never updates a subPath mount.
		if m := mountOf(oc.c, path.Clean(f.Value)); m != nil && m.SubPath != "" {
			t.Errorf("%s: SAGA_METRICS_TOKEN_FILE %s is a subPath mount of %s, which the kubelet never updates: a rotated token would not reach the service", oc, f.Value, metricsSecret)
		}
		if tokenKey != "" && key != tokenKey {
			t.Errorf("%s reads key %s of %s, another Deployment key %s: Prometheus sends one token", oc, key, metricsSecret, tokenKey)
		}
		tokenKey = key
		for _, a := range append(slices.Clone(oc.c.Command), oc.c.Args...) {
			if name, ok := flagName(a); ok && name == "metrics-token-file" {
				t.Errorf("%s passes %s, which overrides SAGA_METRICS_TOKEN_FILE", oc, a)
			}
		}
		if oc.tpl.Metadata.Annotations["prometheus.io/scrape"] == "true" {
			t.Errorf("%s: prometheus.io/scrape: an annotation-based job sends no token and would get 401", oc)
		}
	}
	if len(servers) != 4 {
		t.Fatalf("Deployments of ours %v, want the four services", servers)
	}

	sc := readScrapeConfig(t)
	pols := netPolicies(t, objs)
	prometheus := pod{ns: "monitoring", labels: map[string]string{"app.kubernetes.io/name": "prometheus"}, name: "Prometheus"}
	wantFile := path.Join(prometheusSecretsDir, metricsSecret, tokenKey)
	scraped := map[string]bool{}
	for _, job := range sc.ScrapeConfigs {
		a := job.Authorization
		switch {
		case a == nil || a.CredentialsFile == "":
			t.Errorf("%s job %s: no authorization.credentials_file: the services answer 401", scrapeFile, job.JobName)
		case a.CredentialsFile != wantFile:
			t.Errorf("%s job %s: credentials_file %s, want %s (Secret %s, key %s, as the Prometheus Operator mounts it)", scrapeFile, job.JobName, a.CredentialsFile, wantFile, metricsSecret, tokenKey)
		case a.Credentials != "":
			t.Errorf("%s job %s: a literal token in authorization.credentials", scrapeFile, job.JobName)
		case a.Type != "" && !strings.EqualFold(a.Type, "Bearer"):
			t.Errorf("%s job %s: authorization.type %q, want Bearer", scrapeFile, job.JobName, a.Type)
		}
		if job.BearerToken != "" || job.BearerTokenFile != "" || job.BasicAuth != nil {
			t.Errorf("%s job %s: bearer_token, bearer_token_file or basic_auth: use authorization.credentials_file", scrapeFile, job.JobName)
		}
		if job.MetricsPath != "" && job.MetricsPath != "/metrics" {
			t.Errorf("%s job %s: metrics_path %q, want /metrics", scrapeFile, job.JobName, job.MetricsPath)
		}
		if job.Scheme != "" && job.Scheme != "http" {
			t.Errorf("%s job %s: scheme %q: the services serve /metrics over plain HTTP on 8080", scrapeFile, job.JobName, job.Scheme)
		}
		for _, sd := range job.KubernetesSD {
			if sd.Role != "pod" {
				t.Fatalf("%s job %s: kubernetes_sd_configs role %q is not emulated (want pod)", scrapeFile, job.JobName, sd.Role)
			}
			for _, tg := range podTargets(t, objs, sd.Namespaces.Names) {
				if !relabel(t, job.RelabelConfigs, tg) {
					continue
				}
				kind, name, _ := strings.Cut(tg["workload"], "/")
				port := tg["__meta_kubernetes_pod_container_port_number"]
				if kind != "Deployment" || !servers[name] || port != "8080" {
					t.Errorf("%s job %s scrapes %s port %q (container %s)", scrapeFile, job.JobName, tg["workload"], port, tg["__meta_kubernetes_pod_container_name"])
					continue
				}
				scraped[name] = true
				var w workload
				find(objs, kind, tg["__meta_kubernetes_namespace"], name).decode(t, &w)
				to := pod{ns: tg["__meta_kubernetes_namespace"], labels: w.Spec.Template.Metadata.Labels, name: tg["workload"]}
				if !allowed(pols, prometheus, to, 8080) {
					t.Errorf("the NetworkPolicies keep Prometheus (namespace monitoring) from %s:8080", tg["workload"])
				}
			}
		}
	}
	for name := range servers {
		if !scraped[name] {
			t.Errorf("%s scrapes no pod of Deployment %s", scrapeFile, name)
		}
	}
}
