package issuer

import "time"

// SetNow replaces the clock of the code flow (login pages, codes,
// sessions, refresh tokens) for a test.
func SetNow(i *Issuer, now func() time.Time) {
	i.flowMu.Lock()
	defer i.flowMu.Unlock()
	i.now = now
}
