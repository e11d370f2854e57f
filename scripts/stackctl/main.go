// Command stackctl is the Go helper of scripts/stack.sh (make stack): it
// reads the manifests the local stack runs and talks to Keycloak.
//
//	stackctl nginx-conf -ingress k8s/ingress.yaml -listen 127.0.0.1:58080 -prefix DIR \
//	    -host arch.homework=127.0.0.1,localhost -service auth/keycloak=127.0.0.1:58081 ... -o nginx.conf
//	stackctl realm -manifest k8s/auth/keycloak-realm.yaml -o portfolio-realm.json
//	stackctl oauth2-proxy -manifest k8s/auth/oauth2-proxy.yaml -dir DIR
//	    (writes DIR/alpha-config.yaml and DIR/args, one argument per line)
//	stackctl users -keycloak http://127.0.0.1:58080/auth -admin admin -admin-password-file F \
//	    -user alice:PASSWORD: -user olga:PASSWORD:saga-operator,saga-viewer
//
// Files are written whole or not at all (a temporary file renamed).
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/portfolio-counselor/sagamachine/internal/ingress"
	"github.com/portfolio-counselor/sagamachine/internal/stack"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: stackctl nginx-conf|realm|oauth2-proxy|users [flags]")
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "nginx-conf":
		err = nginxConf(os.Args[2:])
	case "realm":
		err = realm(os.Args[2:])
	case "oauth2-proxy":
		err = oauth2Proxy(os.Args[2:])
	case "users":
		err = users(os.Args[2:])
	default:
		err = fmt.Errorf("unknown subcommand %q", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "stackctl:", err)
		os.Exit(1)
	}
}

// list is a repeatable flag.
type list []string

func (l *list) String() string     { return strings.Join(*l, " ") }
func (l *list) Set(v string) error { *l = append(*l, v); return nil }

func writeFile(path string, data []byte, mode os.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

func nginxConf(args []string) error {
	fs := flag.NewFlagSet("nginx-conf", flag.ExitOnError)
	file := fs.String("ingress", "k8s/ingress.yaml", "the Ingress manifests")
	listen := fs.String("listen", "127.0.0.1:58080", "nginx's loopback address")
	prefix := fs.String("prefix", "", "directory of nginx's pid file, logs and temporary files")
	modules := fs.String("modules", "/usr/lib/nginx/modules", "directory of the dynamic modules (set-misc)")
	out := fs.String("o", "", "output file (default: stdout)")
	var hosts, services list
	fs.Var(&hosts, "host", "INGRESS_HOST=NAME[,NAME...]: local server names for a rule's host (repeatable)")
	fs.Var(&services, "service", "NAMESPACE/NAME=HOST:PORT: local address of a Service (repeatable)")
	_ = fs.Parse(args)
	cfg := ingress.Config{Listen: *listen, Prefix: *prefix, ModulesDir: *modules, Hosts: map[string][]string{}, Services: map[string]string{}}
	for _, h := range hosts {
		k, v, ok := strings.Cut(h, "=")
		if !ok || v == "" {
			return fmt.Errorf("-host %q: want INGRESS_HOST=NAME[,NAME...]", h)
		}
		cfg.Hosts[k] = strings.Split(v, ",")
	}
	for _, s := range services {
		k, v, ok := strings.Cut(s, "=")
		if !ok || v == "" {
			return fmt.Errorf("-service %q: want NAMESPACE/NAME=HOST:PORT", s)
		}
		cfg.Services[k] = v
	}
	ings, err := ingress.ParseFile(*file)
	if err != nil {
		return err
	}
	conf, err := ingress.Render(ings, cfg)
	if err != nil {
		return err
	}
	if *out == "" {
		_, err = os.Stdout.Write(conf)
		return err
	}
	return writeFile(*out, conf, 0o644)
}

func realm(args []string) error {
	fs := flag.NewFlagSet("realm", flag.ExitOnError)
	manifest := fs.String("manifest", "k8s/auth/keycloak-realm.yaml", "the realm's ConfigMap")
	out := fs.String("o", "", "output file (required)")
	_ = fs.Parse(args)
	if *out == "" {
		return fmt.Errorf("realm: -o is required")
	}
	data, err := stack.RealmJSON(*manifest)
	if err != nil {
		return err
	}
	return writeFile(*out, data, 0o644)
}

func oauth2Proxy(args []string) error {
	fs := flag.NewFlagSet("oauth2-proxy", flag.ExitOnError)
	manifest := fs.String("manifest", "k8s/auth/oauth2-proxy.yaml", "oauth2-proxy's manifests")
	dir := fs.String("dir", "", "output directory (required)")
	_ = fs.Parse(args)
	if *dir == "" {
		return fmt.Errorf("oauth2-proxy: -dir is required")
	}
	cfgPath := filepath.Join(*dir, stack.AlphaConfigKey)
	cfg, argv, err := stack.OAuth2Proxy(*manifest, cfgPath)
	if err != nil {
		return err
	}
	if err := writeFile(cfgPath, cfg, 0o644); err != nil {
		return err
	}
	return writeFile(filepath.Join(*dir, "args"), []byte(strings.Join(argv, "\n")+"\n"), 0o644)
}

func users(args []string) error {
	fs := flag.NewFlagSet("users", flag.ExitOnError)
	base := fs.String("keycloak", "http://127.0.0.1:58080/auth", "Keycloak's public URL, with /auth")
	admin := fs.String("admin", "admin", "master realm administrator")
	pwFile := fs.String("admin-password-file", "", "file holding the administrator's password (required)")
	realmName := fs.String("realm", stack.Realm, "realm of the users")
	var specs list
	fs.Var(&specs, "user", "NAME:PASSWORD:ROLE[,ROLE...] (roles may be empty; repeatable)")
	_ = fs.Parse(args)
	pw, err := os.ReadFile(*pwFile)
	if err != nil {
		return fmt.Errorf("users: administrator's password: %w", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	a, err := stack.NewAdmin(ctx, nil, *base, *admin, strings.TrimSpace(string(pw)))
	if err != nil {
		return err
	}
	for _, s := range specs {
		parts := strings.SplitN(s, ":", 3)
		if len(parts) != 3 || parts[0] == "" || parts[1] == "" {
			return fmt.Errorf("-user %q: want NAME:PASSWORD:ROLES", s)
		}
		u := stack.User{Username: parts[0], Password: parts[1], Email: parts[0] + "@example.com",
			FirstName: strings.ToUpper(parts[0][:1]) + parts[0][1:], LastName: "Local"}
		if parts[2] != "" {
			u.Roles = strings.Split(parts[2], ",")
		}
		if _, err := a.EnsureUser(ctx, *realmName, u); err != nil {
			return err
		}
		fmt.Printf("user %s (roles: %s)\n", u.Username, strings.Join(u.Roles, ", "))
	}
	return nil
}
