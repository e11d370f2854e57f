package system

import (
	"fmt"
	"net"
	"slices"

	"github.com/portfolio-counselor/sagamachine/engine/httpapi/console"
	"github.com/portfolio-counselor/sagamachine/internal/auth"
	"github.com/portfolio-counselor/sagamachine/internal/auth/issuer"
)

// ConsoleClientID is the operator console's client id at the in-process
// issuer (the same name as the realm portfolio's public client).
const ConsoleClientID = console.DefaultClientID

// DemoLogins are the accounts of the in-process issuer's login page when
// Config.Logins is nil: make run prints them. The demo operator owns the
// demo portfolio; the viewer reads the console without its action
// buttons; the guest has no role and gets the console's "Access refused"
// page. The issuer listens on loopback only, so these fixed passwords
// reach no one else's machine.
var DemoLogins = []issuer.User{
	{Username: DemoUser, Password: "demo", Name: "Demo Operator", Roles: []string{auth.RoleOperator}},
	{Username: "viewer", Password: "viewer", Name: "Vera Viewer", Roles: []string{auth.RoleViewer}},
	{Username: "guest", Password: "guest", Name: "Guest Without Roles"},
}

// consoleClient is the console's registration at the in-process issuer for
// saga-machine at smURL (http://127.0.0.1:PORT): the redirect URI, the
// post-logout page and the web origin under both 127.0.0.1 and localhost,
// compared exactly by the issuer.
func consoleClient(smURL string) issuer.Client {
	c := issuer.Client{ID: ConsoleClientID, Audience: issuer.DefaultAudience}
	origins := []string{smURL}
	if _, port, err := net.SplitHostPort(smURL[len("http://"):]); err == nil {
		for _, host := range []string{"127.0.0.1", "localhost"} {
			if o := "http://" + net.JoinHostPort(host, port); !slices.Contains(origins, o) {
				origins = append(origins, o)
			}
		}
	}
	for _, o := range origins {
		c.WebOrigins = append(c.WebOrigins, o)
		c.RedirectURIs = append(c.RedirectURIs, o+"/console/")
		c.PostLogoutRedirectURIs = append(c.PostLogoutRedirectURIs, o+"/console/signed-out.html")
	}
	return c
}

// registerConsole registers the console's client and the login accounts
// at the in-process issuer.
func (s *System) registerConsole(logins []issuer.User) error {
	if err := s.Issuer.RegisterClient(consoleClient(s.URLs.SagaMachine)); err != nil {
		return fmt.Errorf("register the console at the OIDC issuer: %w", err)
	}
	if logins == nil {
		logins = DemoLogins
	}
	for _, u := range logins {
		if err := s.Issuer.AddUser(u); err != nil {
			return fmt.Errorf("add the login %s at the OIDC issuer: %w", u.Username, err)
		}
	}
	return nil
}
