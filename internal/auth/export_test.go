package auth

import "time"

// SetJWKSClock replaces the clock of a's JWKS refetch limit (tests only;
// call it before a verifies a token).
func SetJWKSClock(a *Authenticator, now func() time.Time) { a.keys.now = now }
