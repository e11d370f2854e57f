package stack

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"gopkg.in/yaml.v3"
)

// RealmKey is the key of the realm file in the ConfigMap keycloak-realm.
const RealmKey = "portfolio-realm.json"

// AlphaConfigKey is the key of oauth2-proxy's alpha config in its ConfigMap.
const AlphaConfigKey = "alpha-config.yaml"

type object struct {
	Kind     string `yaml:"kind"`
	Metadata struct {
		Name      string `yaml:"name"`
		Namespace string `yaml:"namespace"`
	} `yaml:"metadata"`
	Data map[string]string `yaml:"data"`
	Spec struct {
		Template struct {
			Spec struct {
				Containers []struct {
					Name string   `yaml:"name"`
					Args []string `yaml:"args"`
				} `yaml:"containers"`
			} `yaml:"spec"`
		} `yaml:"template"`
	} `yaml:"spec"`
}

func readObjects(path string) ([]object, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("stack: read %s: %w", path, err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var out []object
	for {
		var o object
		err := dec.Decode(&o)
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, fmt.Errorf("stack: parse %s: %w", path, err)
		}
		out = append(out, o)
	}
}

func find(objs []object, kind, name string) *object {
	for i := range objs {
		if objs[i].Kind == kind && objs[i].Metadata.Name == name {
			return &objs[i]
		}
	}
	return nil
}

// RealmJSON returns the realm file Keycloak imports: the key
// portfolio-realm.json of the ConfigMap keycloak-realm in the manifest at
// path (k8s/auth/keycloak-realm.yaml). It must be a JSON object naming
// the realm "portfolio".
func RealmJSON(path string) ([]byte, error) {
	objs, err := readObjects(path)
	if err != nil {
		return nil, err
	}
	cm := find(objs, "ConfigMap", "keycloak-realm")
	if cm == nil || cm.Data[RealmKey] == "" {
		return nil, fmt.Errorf("stack: %s has no ConfigMap keycloak-realm with %s", path, RealmKey)
	}
	var realm struct {
		Realm string `json:"realm"`
	}
	if err := json.Unmarshal([]byte(cm.Data[RealmKey]), &realm); err != nil {
		return nil, fmt.Errorf("stack: %s: %s: %w", path, RealmKey, err)
	}
	if realm.Realm != "portfolio" {
		return nil, fmt.Errorf("stack: %s: realm %q, want portfolio", path, realm.Realm)
	}
	return []byte(cm.Data[RealmKey]), nil
}

// OAuth2Proxy returns oauth2-proxy's alpha config (ConfigMap oauth2-proxy,
// key alpha-config.yaml) and the arguments of its container (Deployment
// oauth2-proxy) from the manifest at path (k8s/auth/oauth2-proxy.yaml),
// with --alpha-config pointing at alphaConfigPath instead of the mount
// path. Both must be there.
func OAuth2Proxy(path, alphaConfigPath string) (alphaConfig []byte, args []string, err error) {
	objs, err := readObjects(path)
	if err != nil {
		return nil, nil, err
	}
	cm := find(objs, "ConfigMap", "oauth2-proxy")
	if cm == nil || cm.Data[AlphaConfigKey] == "" {
		return nil, nil, fmt.Errorf("stack: %s has no ConfigMap oauth2-proxy with %s", path, AlphaConfigKey)
	}
	dep := find(objs, "Deployment", "oauth2-proxy")
	if dep == nil || len(dep.Spec.Template.Spec.Containers) == 0 {
		return nil, nil, fmt.Errorf("stack: %s has no Deployment oauth2-proxy with a container", path)
	}
	found := false
	for _, a := range dep.Spec.Template.Spec.Containers[0].Args {
		if strings.HasPrefix(a, "--alpha-config=") {
			a = "--alpha-config=" + alphaConfigPath
			found = true
		}
		args = append(args, a)
	}
	if !found {
		return nil, nil, fmt.Errorf("stack: %s: the oauth2-proxy container has no --alpha-config argument", path)
	}
	return []byte(cm.Data[AlphaConfigKey]), args, nil
}
