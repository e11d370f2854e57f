package stack

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// Env is what the running stack wrote into $SAGA_RUN_DIR/stack/stack.env.
type Env struct {
	// URL is the front door (nginx), e.g. http://127.0.0.1:58080.
	URL string
	// Issuer is the realm's issuer, URL + /auth/realms/portfolio.
	Issuer string
	// KeycloakURL is Keycloak's public base, URL + /auth.
	KeycloakURL string
	// Direct maps each service (saga-machine, deals, profile,
	// notification) to its own loopback URL, behind the front door.
	Direct map[string]string
	// AdminUser is Keycloak's master-realm administrator; AdminPassword
	// her password.
	AdminUser, AdminPassword string
	// Accounts maps the demo accounts' roles ("user", "operator",
	// "funding") to user name and password.
	Accounts map[string][2]string
	// Dir is the stack's directory ($SAGA_RUN_DIR/stack).
	Dir string
}

// RunDir returns $SAGA_RUN_DIR, or its default as scripts/lib.sh picks it:
// /var/tmp/saga-machine for root (or without $HOME), else
// ~/.cache/saga-machine.
func RunDir() string {
	if d := os.Getenv("SAGA_RUN_DIR"); d != "" {
		return d
	}
	home := os.Getenv("HOME")
	if os.Geteuid() == 0 || home == "" {
		return "/var/tmp/saga-machine"
	}
	return filepath.Join(home, ".cache", "saga-machine")
}

// LoadEnv reads dir/stack.env (dir "" means RunDir()/stack). Every
// address must be there: a missing one means the stack is not (fully) up.
func LoadEnv(dir string) (Env, error) {
	if dir == "" {
		dir = filepath.Join(RunDir(), "stack")
	}
	path := filepath.Join(dir, "stack.env")
	f, err := os.Open(path)
	if err != nil {
		return Env{}, fmt.Errorf("stack: %w (is the stack running? make stack)", err)
	}
	defer f.Close()
	kv := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			return Env{}, fmt.Errorf("stack: %s: line %q is not KEY=VALUE", path, line)
		}
		kv[k] = strings.Trim(v, `'"`)
	}
	if err := sc.Err(); err != nil {
		return Env{}, fmt.Errorf("stack: read %s: %w", path, err)
	}
	e := Env{URL: kv["STACK_URL"], Issuer: kv["STACK_ISSUER"], KeycloakURL: kv["STACK_KEYCLOAK_URL"],
		AdminUser: kv["STACK_KEYCLOAK_ADMIN"], Dir: dir,
		Direct: map[string]string{"saga-machine": kv["STACK_SAGA_MACHINE_URL"], "deals": kv["STACK_DEALS_URL"],
			"profile": kv["STACK_PROFILE_URL"], "notification": kv["STACK_NOTIFICATION_URL"]},
		Accounts: map[string][2]string{}}
	for _, role := range []string{"user", "operator", "funding"} {
		up := strings.ToUpper(role)
		e.Accounts[role] = [2]string{kv["STACK_"+up+"_NAME"], kv["STACK_"+up+"_PASSWORD"]}
	}
	if pwFile := kv["STACK_KEYCLOAK_ADMIN_PASSWORD_FILE"]; pwFile != "" {
		b, err := os.ReadFile(pwFile)
		if err != nil {
			return Env{}, fmt.Errorf("stack: Keycloak admin password: %w", err)
		}
		e.AdminPassword = strings.TrimSpace(string(b))
	}
	var missing []string
	check := func(name, v string) {
		if v == "" {
			missing = append(missing, name)
		}
	}
	check("STACK_URL", e.URL)
	check("STACK_ISSUER", e.Issuer)
	check("STACK_KEYCLOAK_URL", e.KeycloakURL)
	check("STACK_KEYCLOAK_ADMIN", e.AdminUser)
	check("STACK_KEYCLOAK_ADMIN_PASSWORD_FILE", e.AdminPassword)
	for name, u := range e.Direct {
		check(name+" URL", u)
	}
	for role, a := range e.Accounts {
		check(role+" account's name", a[0])
		check(role+" account's password", a[1])
	}
	if len(missing) > 0 {
		return Env{}, fmt.Errorf("stack: %s lacks %s", path, strings.Join(missing, ", "))
	}
	return e, nil
}
