package program

import (
	"fmt"
	"net/url"
	"strings"
)

// Placeholder marks a secret that the shipped manifests leave for the
// operator to fill in (k8s/*.yaml write CHANGE_ME for every password).
const Placeholder = "CHANGE_ME"

// Secret is one secret setting a command was given, for RefusePlaceholders.
type Secret struct {
	// Name tells the operator where the value came from, e.g.
	// "--kafka-password (SAGA_KAFKA_PASSWORD)".
	Name string
	// Value is the value as given (a password, or a URL that may carry one).
	Value string
}

// RefusePlaceholders returns an error naming every secret whose value is
// or contains Placeholder (compared case-insensitively, and also in a URL's
// decoded user information), so that a process started from the shipped
// manifests without real secrets stops at once with a clear message
// instead of running with a guessable password. Empty values are not
// checked: whether a secret is required is the caller's business. The
// message names the settings, never their values.
func RefusePlaceholders(secrets ...Secret) error {
	var bad []string
	for _, s := range secrets {
		if hasPlaceholder(s.Value) {
			bad = append(bad, s.Name)
		}
	}
	if len(bad) == 0 {
		return nil
	}
	return fmt.Errorf("%s still %s the placeholder %s from the example manifests: set the real secret (refusing to start)",
		strings.Join(bad, ", "), map[bool]string{true: "contains", false: "contain"}[len(bad) == 1], Placeholder)
}

func hasPlaceholder(v string) bool {
	if strings.Contains(strings.ToUpper(v), Placeholder) {
		return true
	}
	// A URL may carry the placeholder percent-encoded in its password.
	if u, err := url.Parse(v); err == nil && u.User != nil {
		pw, _ := u.User.Password()
		return strings.Contains(strings.ToUpper(u.User.Username()+":"+pw), Placeholder)
	}
	if d, err := url.QueryUnescape(v); err == nil && d != v {
		return strings.Contains(strings.ToUpper(d), Placeholder)
	}
	return false
}
