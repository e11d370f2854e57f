// Package ingress turns the Kubernetes Ingress objects of k8s/ingress.yaml
// into an nginx configuration for the local stack (make stack), so that the
// routes the browser test passes through are the routes a cluster deploys:
// the local nginx config is generated, never a second hand-written copy.
//
// Parse reads the Ingress objects of a YAML stream (other kinds are
// skipped). Render writes a complete nginx.conf that serves them the way
// ingress-nginx does, with each Service replaced by a local address:
//
//   - pathType Prefix /p becomes "location = /p" and "location /p/";
//     Exact becomes "location = /p"; an Ingress with
//     nginx.ingress.kubernetes.io/use-regex: "true" gets case-insensitive
//     regular-expression locations ("location ~* ^/p"), longest first.
//   - rewrite-target becomes a rewrite of the matched path ("/$2" keeps
//     the second capture group of the path).
//   - auth-url becomes an auth_request to an internal location that
//     proxies to the auth service (oauth2-proxy's /oauth2/auth) without the
//     request body, with the X-Original-URL, X-Original-Method,
//     X-Auth-Request-Redirect and X-Forwarded-* headers ingress-nginx sends;
//     auth-response-headers are copied from the auth response into the
//     proxied request (the access token in Authorization); auth-signin is
//     where a 401 of the auth service redirects (its "http://$host" becomes
//     "$scheme://$http_host", because the local stack listens on a port of
//     its own; $escaped_request_uri is set with set_escape_uri, from
//     Debian's libnginx-mod-http-set-misc, as in ingress-nginx).
//   - proxy-buffer-size sets proxy_buffer_size.
//
// Any other nginx.ingress.kubernetes.io annotation is an error: a route
// the generator cannot render faithfully must not be served differently
// in silence. Requests for a host no rule names get 404 from a default
// server, as from ingress-nginx's default backend; inside a known host,
// paths no rule names get 404 too.
//
// Routes lists every path of the Ingress objects with its backend, for
// tests that check that each one is served.
package ingress
