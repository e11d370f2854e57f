package service

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
)

// MaxBodyBytes bounds request bodies.
const MaxBodyBytes = 64 << 10

// DecodeJSON reads r's body into dst strictly: Content-Type must be
// application/json (or a +json type), unknown fields are refused, the body
// must hold exactly one JSON value. Errors are *Error (400 or 415) with a
// message that names the offending field or byte offset.
func DecodeJSON(w http.ResponseWriter, r *http.Request, dst any) error {
	if !IsJSONContentType(r.Header.Get("Content-Type")) {
		return unsupportedMedia(r.Header.Get("Content-Type"))
	}
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, MaxBodyBytes))
	dec.DisallowUnknownFields()
	if err := dec.Decode(dst); err != nil {
		return Malformed(describeJSONError(err))
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return Malformed("the body holds more than one JSON value; send exactly one object")
	}
	return nil
}

func describeJSONError(err error) string {
	var syn *json.SyntaxError
	var typ *json.UnmarshalTypeError
	var tooBig *http.MaxBytesError
	switch {
	case errors.Is(err, io.EOF):
		return "the request body is empty; send a JSON object"
	case errors.Is(err, io.ErrUnexpectedEOF):
		return "the request body is truncated JSON"
	case errors.As(err, &syn):
		return fmt.Sprintf("the request body is not valid JSON (at byte %d): %v", syn.Offset, syn)
	case errors.As(err, &typ):
		if typ.Field == "" {
			return fmt.Sprintf("the request body must be a JSON object, got %s", typ.Value)
		}
		return fmt.Sprintf("field %q must be a %s, got %s", typ.Field, jsonKind(typ.Type.Kind().String()), typ.Value)
	case errors.As(err, &tooBig):
		return fmt.Sprintf("the request body is larger than %d bytes", tooBig.Limit)
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		return "unknown field " + strings.TrimPrefix(err.Error(), "json: unknown field ") + " (fields not in the API are refused)"
	}
	return "the request body cannot be read: " + err.Error()
}

func jsonKind(goKind string) string {
	switch goKind {
	case "string":
		return "string"
	case "bool":
		return "boolean"
	case "slice", "array":
		return "array"
	case "map", "struct":
		return "object"
	}
	return "number"
}
