package httpapi

import (
	"net/http"

	"github.com/portfolio-counselor/sagamachine/internal/tracing"
)

// traced records a server span per request when tracing is on
// (internal/tracing.Handler, named after the route): POST /sagas then
// starts its saga as a child of that span, since the handler reads the
// traceparent header the span replaced.
func (s *server) traced(h http.Handler) http.Handler { return tracing.Handler(s.router, h) }
