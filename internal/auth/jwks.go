package auth

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"sync"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

// DefaultJWKSRefetchInterval is the least time between two JWKS fetches
// triggered by tokens whose key id is unknown (Config.JWKSRefetchInterval).
const DefaultJWKSRefetchInterval = 10 * time.Second

// maxJWKSBytes bounds a JWKS document.
const maxJWKSBytes = 1 << 20

// signingAlgs are the asymmetric JWS algorithms a token may be signed
// with; "none" and HMAC are never accepted (go-oidc's list).
var signingAlgs = []jose.SignatureAlgorithm{
	jose.RS256, jose.RS384, jose.RS512, jose.ES256, jose.ES384, jose.ES512,
	jose.PS256, jose.PS384, jose.PS512, jose.EdDSA,
}

// keySet verifies token signatures against the issuer's JWKS. It is the
// go-oidc KeySet of the Authenticator's verifier and replaces go-oidc's
// RemoteKeySet, which refetches the JWKS on EVERY signature that does not
// verify: a stream of forged tokens then becomes a stream of requests to
// the identity provider. Here the JWKS is fetched on the first token, then
// again only when a token names a key id that is not in the cached set (or
// names none and no cached key verifies it: key rotation), and at most once
// per interval. A bad signature under a known key id is refused from the
// cache.
type keySet struct {
	url      string
	client   *http.Client
	interval time.Duration
	log      *slog.Logger
	now      func() time.Time

	mu   sync.RWMutex
	keys []jose.JSONWebKey

	fetchMu   sync.Mutex // one fetch at a time; guards lastFetch and fetches
	lastFetch time.Time  // zero before the first fetch
	fetches   int
}

// VerifySignature implements oidc.KeySet: it returns the payload of a
// token whose signature verifies against a key of the issuer.
func (k *keySet) VerifySignature(ctx context.Context, raw string) ([]byte, error) {
	jws, err := jose.ParseSignedCompact(raw, signingAlgs) // a bearer JWT is compact (RFC 7519)
	if err != nil {
		return nil, fmt.Errorf("malformed token: %w", err)
	}
	if len(jws.Signatures) != 1 {
		return nil, fmt.Errorf("the token has %d signatures, want exactly one", len(jws.Signatures))
	}
	kid := jws.Signatures[0].Header.KeyID
	payload, known, err := verifyWith(jws, k.cached(), kid)
	if err == nil || known {
		return payload, err
	}
	// The key id is not in the cache: the issuer may have rotated its keys.
	keys, fetched, ferr := k.refresh(ctx)
	payload, known, err = verifyWith(jws, keys, kid)
	switch {
	case err == nil:
		return payload, nil
	case known:
		return nil, err
	case ferr != nil:
		return nil, fmt.Errorf("signing key %q is unknown and the JWKS could not be fetched: %w", kid, ferr)
	case !fetched:
		return nil, fmt.Errorf("signing key %q is not in the issuer's JWKS (fetched less than %s ago)", kid, k.interval)
	}
	return nil, fmt.Errorf("signing key %q is not in the issuer's JWKS", kid)
}

// verifyWith verifies jws against the keys of id kid (every key when kid is
// ""). known tells that a key of that id exists (so fetching again cannot
// help): then err is the signature's failure.
func verifyWith(jws *jose.JSONWebSignature, keys []jose.JSONWebKey, kid string) (payload []byte, known bool, err error) {
	for i := range keys {
		if kid != "" && keys[i].KeyID != kid {
			continue
		}
		if p, err := jws.Verify(&keys[i]); err == nil {
			return p, true, nil
		}
		if kid != "" {
			known = true
		}
	}
	if known {
		return nil, true, fmt.Errorf("the signature does not verify with key %q", kid)
	}
	return nil, false, errors.New("no key of the issuer verifies the signature")
}

func (k *keySet) cached() []jose.JSONWebKey {
	k.mu.RLock()
	defer k.mu.RUnlock()
	return k.keys
}

// refresh fetches the JWKS unless it was fetched less than the interval
// ago, and returns the keys to use: fetched is true when it fetched them
// now. Concurrent callers wait for the fetch under way and then use its
// keys (they do not fetch again).
func (k *keySet) refresh(ctx context.Context) (keys []jose.JSONWebKey, fetched bool, err error) {
	k.fetchMu.Lock()
	defer k.fetchMu.Unlock()
	if !k.lastFetch.IsZero() && k.now().Sub(k.lastFetch) < k.interval {
		return k.cached(), false, nil
	}
	k.lastFetch = k.now()
	k.fetches++
	// The fetch outlives a client that goes away: others may wait on it.
	keys, err = k.fetch(context.WithoutCancel(ctx))
	if err != nil {
		k.log.Warn("auth: fetching the issuer's JWKS failed", "url", k.url, "error", err)
		return k.cached(), true, err
	}
	k.mu.Lock()
	k.keys = keys
	k.mu.Unlock()
	return keys, true, nil
}

// fetch reads the JWKS, skipping keys of types or algorithms go-jose does
// not support (as go-oidc does) rather than failing on them.
func (k *keySet) fetch(ctx context.Context) ([]jose.JSONWebKey, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, k.url, nil)
	if err != nil {
		return nil, fmt.Errorf("fetch JWKS %s: %w", k.url, err)
	}
	req.Header.Set("Accept", "application/json")
	resp, err := k.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("fetch JWKS %s: %w", k.url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxJWKSBytes+1))
	if err != nil {
		return nil, fmt.Errorf("fetch JWKS %s: read: %w", k.url, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("fetch JWKS %s: status %s", k.url, resp.Status)
	}
	if len(body) > maxJWKSBytes {
		return nil, fmt.Errorf("fetch JWKS %s: larger than %d bytes", k.url, maxJWKSBytes)
	}
	var set struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if err := json.Unmarshal(body, &set); err != nil {
		return nil, fmt.Errorf("fetch JWKS %s: decode: %w", k.url, err)
	}
	keys := make([]jose.JSONWebKey, 0, len(set.Keys))
	for _, raw := range set.Keys {
		var key jose.JSONWebKey
		if err := json.Unmarshal(raw, &key); err != nil {
			k.log.Debug("auth: skipping a JWKS key go-jose cannot read", "url", k.url, "error", err)
			continue
		}
		if key.Use != "" && key.Use != "sig" || !key.IsPublic() {
			continue
		}
		keys = append(keys, key)
	}
	return keys, nil
}
