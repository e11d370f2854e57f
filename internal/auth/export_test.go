package auth

import "time"

// SetJWKSClock replaces the clock of a's JWKS refetch limit (tests only;
// call it before a verifies a token).
func SetJWKSClock(a *Authenticator, now func() time.Time) { a.keys.now = now }

// SetClock replaces the clock the verifier checks expiry with and the
// token cache's (tests only; call it before a verifies a token).
func SetClock(a *Authenticator, now func() time.Time) { a.now = now }

// TokenCacheLen is the number of tokens a holds verified (-1: no cache).
func TokenCacheLen(a *Authenticator) int {
	if a.cache == nil {
		return -1
	}
	return a.cache.len()
}

// SetTokenCacheSize bounds a's token cache (tests only).
func SetTokenCacheSize(a *Authenticator, n int) { a.cache.max = n }
