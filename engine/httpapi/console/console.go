package console

import (
	"embed"
	"io/fs"
	"net/http"
)

//go:embed assets
var assets embed.FS

// ContentSecurityPolicy is sent with every console asset: scripts, styles
// and API calls from the same origin only. Inline styles are allowed for the
// <style> element inside the server-rendered SVG diagrams.
const ContentSecurityPolicy = "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; " +
	"img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"

// Assets returns the console's files (index.html, app.js, app.css).
func Assets() fs.FS {
	sub, err := fs.Sub(assets, "assets")
	if err != nil {
		panic(err) // "assets" is embedded above; fs.Sub fails only on an invalid name
	}
	return sub
}

// Handler serves the console's files at the root of the path it is given
// (mount it with http.StripPrefix). Every response carries
// ContentSecurityPolicy and asks browsers to revalidate, so a new binary's
// console is picked up at once.
func Handler() http.Handler {
	files := http.FileServerFS(Assets())
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", ContentSecurityPolicy)
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("Cache-Control", "no-cache")
		files.ServeHTTP(w, r)
	})
}
