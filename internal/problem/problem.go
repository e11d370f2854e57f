package problem

import (
	"encoding/json"
	"net/http"
)

// TypePrefix starts the type URI of every problem saga-machine writes; the
// suffix is the stable slug of the error.
const TypePrefix = "urn:saga-machine:problem:"

// ContentType is the media type of a problem details body.
const ContentType = "application/problem+json"

// FieldError is one validation failure of a request field.
type FieldError struct {
	// Field is the JSON name of the field (or query parameter, or header).
	Field string `json:"field"`
	// Message says what is wrong and what is expected.
	Message string `json:"message"`
}

// Problem is an RFC 9457 problem details document.
type Problem struct {
	Type     string `json:"type"`
	Title    string `json:"title"`
	Status   int    `json:"status"`
	Detail   string `json:"detail,omitempty"`
	Instance string `json:"instance,omitempty"`
	// Code repeats the slug of Type for clients that prefer a short string
	// (saga-machine's API sets it).
	Code string `json:"code,omitempty"`
	// Errors lists the invalid fields of a validation problem.
	Errors []FieldError `json:"errors,omitempty"`
}

// New returns the problem of status with type TypePrefix+slug, the status
// text as title, and detail.
func New(status int, slug, detail string) Problem {
	return Problem{Type: TypePrefix + slug, Title: http.StatusText(status), Status: status, Detail: detail}
}

// Write answers with p: status p.Status, Content-Type ContentType,
// Cache-Control no-store. An empty Instance is set to the request's path.
func Write(w http.ResponseWriter, r *http.Request, p Problem) {
	if p.Instance == "" && r != nil {
		p.Instance = r.URL.Path
	}
	w.Header().Set("Content-Type", ContentType)
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(p.Status)
	_ = json.NewEncoder(w).Encode(p) // the client went away: nothing left to do
}
