package issuer

import (
	"bytes"
	"html/template"
	"net/http"
)

// pageCSS styles the login and error pages (inline: the pages load nothing).
const pageCSS = `body{font:15px/1.45 system-ui,sans-serif;background:#f4f5f7;color:#1d2330;margin:0}
main{max-width:380px;margin:9vh auto;background:#fff;border:1px solid #d8dce3;border-radius:8px;padding:28px 32px}
h1{font-size:22px;margin:0 0 4px}.sub{color:#5b6475;margin:0 0 18px;font-size:13px}
label{display:block;margin:12px 0 4px;font-weight:600;font-size:13px}
input{width:100%;box-sizing:border-box;padding:8px 10px;border:1px solid #b8bfcc;border-radius:5px;font:inherit}
button{margin-top:18px;width:100%;padding:9px;border:0;border-radius:5px;background:#2457c5;color:#fff;font:inherit;font-weight:600;cursor:pointer}
.error{background:#fde8e8;border:1px solid #f2b8b8;color:#8a1c1c;padding:8px 10px;border-radius:5px}
.hint{color:#5b6475;font-size:12px;margin-top:18px}`

var loginTmpl = template.Must(template.New("login").Parse(`<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<title>Sign in · saga-machine dev issuer</title>
<style>` + pageCSS + `</style>
</head>
<body>
<main>
<h1>Sign in</h1>
<p class="sub">to <strong id="client">{{.Client}}</strong> at saga-machine's development issuer (the in-process stand-in for Keycloak)</p>
{{if .Error}}<p class="error" role="alert" id="login-error">{{.Error}}</p>{{end}}
<form method="post" action="{{.Action}}" id="login-form" autocomplete="on">
<input type="hidden" name="request" value="{{.Request}}">
<input type="hidden" name="csrf" value="{{.CSRF}}">
<label for="username">Username</label>
<input id="username" name="username" autocomplete="username" required autofocus value="{{.Username}}" spellcheck="false">
<label for="password">Password</label>
<input id="password" name="password" type="password" autocomplete="current-password" required>
<button type="submit" id="sign-in">Sign in</button>
</form>
<p class="hint">Development only: this issuer listens on loopback. <code>make run</code> prints the demo accounts.</p>
</main>
</body>
</html>
`))

var errorTmpl = template.Must(template.New("error").Parse(`<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<title>{{.Title}} · saga-machine dev issuer</title>
<style>` + pageCSS + `</style>
</head>
<body>
<main>
<h1 id="title">{{.Title}}</h1>
<p id="detail">{{.Detail}}</p>
</main>
</body>
</html>
`))

// pageHeaders are sent with every HTML page of the issuer: no script at
// all, no framing (clickjacking of the login form), nothing cached.
// formTarget is the origin the login form's answer redirects to (CSP
// form-action applies to the redirect too).
func pageHeaders(w http.ResponseWriter, formTarget string) {
	h := w.Header()
	csp := "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
	if formTarget != "" {
		csp += " " + formTarget
	}
	h.Set("Content-Security-Policy", csp)
	h.Set("X-Frame-Options", "DENY")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Cache-Control", "no-store")
	h.Set("Content-Type", "text/html; charset=utf-8")
}

// loginPage renders the login form of req.
func (i *Issuer) loginPage(w http.ResponseWriter, status int, req *authRequest, username, errMsg string) {
	var buf bytes.Buffer
	err := loginTmpl.Execute(&buf, map[string]string{
		"Client": req.client.ID, "Error": errMsg, "Action": i.path + "/login",
		"Request": req.id, "CSRF": req.csrf, "Username": username,
	})
	if err != nil {
		http.Error(w, "rendering the login page: "+err.Error(), http.StatusInternalServerError)
		return
	}
	pageHeaders(w, origin(req.redirectURI))
	w.WriteHeader(status)
	_, _ = w.Write(buf.Bytes()) // the client went away: nothing left to do
}

// errorPage renders a page with a title and a sentence.
func (i *Issuer) errorPage(w http.ResponseWriter, status int, title, detail string) {
	var buf bytes.Buffer
	if err := errorTmpl.Execute(&buf, map[string]string{"Title": title, "Detail": detail}); err != nil {
		http.Error(w, "rendering a page: "+err.Error(), http.StatusInternalServerError)
		return
	}
	pageHeaders(w, "")
	w.WriteHeader(status)
	_, _ = w.Write(buf.Bytes()) // the client went away: nothing left to do
}
