package main

import "fmt"

// checkClientID refuses a --console-client-id that no issuer would
// register: longer than 255 bytes, or with spaces, control or non-ASCII
// characters (it is put in URLs and in the console's settings).
func checkClientID(id string) error {
	if len(id) > 255 {
		return fmt.Errorf("--console-client-id is %d bytes long: at most 255", len(id))
	}
	for _, r := range id {
		if r <= ' ' || r > '~' {
			return fmt.Errorf("--console-client-id %q: only printable ASCII without spaces is allowed", id)
		}
	}
	return nil
}
