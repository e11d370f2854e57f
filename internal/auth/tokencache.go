package auth

import (
	"crypto/sha256"
	"slices"
	"sync"
	"time"
)

// DefaultTokenCacheTTL is how long a verified access token is answered
// from memory before it is verified again (Config.TokenCacheTTL), never
// past the token's own expiry.
const DefaultTokenCacheTTL = time.Minute

// DefaultTokenCacheSize bounds the verified tokens kept in memory.
const DefaultTokenCacheSize = 10_000

// tokenCache remembers the users of bearer tokens that verified, so that
// a client sending the same token again (every request of a session
// does) is not verified again: a signature check and the claims' JSON
// cost ~75 µs and 200 allocations per request (BenchmarkMiddleware).
//
// Only a token that passed every check of Verify is stored, keyed by the
// SHA-256 of the whole token (header, claims and signature): a token that
// differs in any byte, a tampered or re-signed one included, is another
// key and is verified in full; forged tokens can therefore never fill the
// cache. An entry lasts until the token expires or for the cache's TTL,
// whichever comes first, so an expired token is refused exactly as
// without the cache. What the TTL delays: a key the issuer withdraws
// keeps its tokens accepted until their entries lapse (the JWKS cache
// keeps a withdrawn key longer than that: until a token names an unknown
// key id).
type tokenCache struct {
	ttl time.Duration
	max int
	now func() time.Time

	mu      sync.Mutex
	entries map[[sha256.Size]byte]cachedUser
}

// cachedUser is the verified user of a token and until when it may be
// answered from the cache.
type cachedUser struct {
	user  User
	until time.Time
}

func newTokenCache(ttl time.Duration, max int, now func() time.Time) *tokenCache {
	return &tokenCache{ttl: ttl, max: max, now: now, entries: make(map[[sha256.Size]byte]cachedUser)}
}

// get returns the user of raw if it verified less than the TTL ago and
// has not expired since.
func (c *tokenCache) get(raw string) (User, bool) {
	key := sha256.Sum256([]byte(raw))
	now := c.now()
	c.mu.Lock()
	e, ok := c.entries[key]
	if ok && !now.Before(e.until) {
		delete(c.entries, key)
		ok = false
	}
	c.mu.Unlock()
	if !ok {
		return User{}, false
	}
	e.user.Roles = slices.Clone(e.user.Roles) // the caller may change its copy
	return e.user, true
}

// put stores the user of raw, a token that verified and expires at exp.
// A full cache first drops its lapsed entries, then, if still full,
// everything (the next requests verify their tokens again).
func (c *tokenCache) put(raw string, u User, exp time.Time) {
	now := c.now()
	until := now.Add(c.ttl)
	if exp.Before(until) {
		until = exp
	}
	if !now.Before(until) {
		return
	}
	u.Roles = slices.Clone(u.Roles)
	key := sha256.Sum256([]byte(raw))
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.entries) >= c.max {
		for k, e := range c.entries {
			if !now.Before(e.until) {
				delete(c.entries, k)
			}
		}
		if len(c.entries) >= c.max {
			clear(c.entries)
		}
	}
	c.entries[key] = cachedUser{user: u, until: until}
}

// len is the number of entries (tests).
func (c *tokenCache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.entries)
}
