package httpapi

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strings"

	"github.com/portfolio-counselor/sagamachine/engine"
)

// writeJSON answers with v as JSON.
func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(v) // the client went away; the request log has the status
}

// checkMediaType refuses a body whose Content-Type is set and not one of
// allowed. A missing Content-Type is accepted (curl -d sends a form type, so
// only an explicit wrong type is refused).
func checkMediaType(r *http.Request, op string, allowed ...string) error {
	ct := r.Header.Get("Content-Type")
	if ct == "" {
		return nil
	}
	mt, _, err := mime.ParseMediaType(ct)
	if err != nil {
		return engine.Errorf(CodeMediaType, op, "Content-Type %q cannot be parsed: %v", ct, err)
	}
	for _, a := range allowed {
		if mt == a {
			return nil
		}
	}
	return engine.Errorf(CodeMediaType, op, "Content-Type %s is not accepted; send %s", mt, strings.Join(allowed, " or "))
}

// readBody reads at most limit bytes of the body; a larger body is a
// CodeTooLarge error.
func readBody(w http.ResponseWriter, r *http.Request, op string, limit int64) ([]byte, error) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return nil, engine.Errorf(CodeTooLarge, op, "the request body is larger than %d bytes", limit)
		}
		return nil, &engine.Error{Code: engine.CodeInvalid, Op: op, Message: "read the request body", Err: err}
	}
	return body, nil
}

// decodeJSON decodes a JSON object body into dst strictly: application/json
// (or no Content-Type), at most MaxJSONBody bytes, no unknown fields, no
// trailing data. With optional set an empty body leaves dst unchanged.
func decodeJSON(w http.ResponseWriter, r *http.Request, op string, dst any, optional bool) error {
	if err := checkMediaType(r, op, "application/json"); err != nil {
		return err
	}
	body, err := readBody(w, r, op, MaxJSONBody)
	if err != nil {
		return err
	}
	if len(strings.TrimSpace(string(body))) == 0 {
		if optional {
			return nil
		}
		return engine.Errorf(engine.CodeInvalid, op, "the request body is empty; send a JSON object")
	}
	dec := json.NewDecoder(strings.NewReader(string(body)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(dst); err != nil {
		return engine.Errorf(engine.CodeInvalid, op, "request body: %s", describeJSONError(err, body))
	}
	if dec.More() {
		return engine.Errorf(engine.CodeInvalid, op, "request body: unexpected data after the JSON object")
	}
	var extra json.RawMessage
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return engine.Errorf(engine.CodeInvalid, op, "request body: unexpected data after the JSON object")
	}
	return nil
}

// describeJSONError turns a decoding error into a message that names the
// field or the position.
func describeJSONError(err error, body []byte) string {
	var syn *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.As(err, &syn):
		line, col := position(body, syn.Offset)
		return fmt.Sprintf("invalid JSON at line %d, column %d: %v", line, col, syn)
	case errors.As(err, &typ):
		if typ.Field == "" {
			return fmt.Sprintf("expected a JSON object, got %s", typ.Value)
		}
		return fmt.Sprintf("field %q must be %s, got %s", typ.Field, jsonTypeName(typ.Type.Kind().String()), typ.Value)
	case errors.Is(err, io.ErrUnexpectedEOF):
		return "the JSON object is cut short"
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		return "unknown field " + strings.TrimPrefix(err.Error(), "json: unknown field ")
	}
	return err.Error()
}

// jsonTypeName names a Go kind as a JSON type.
func jsonTypeName(kind string) string {
	switch kind {
	case "int", "int64", "int32", "uint", "uint64", "float64":
		return "a number"
	case "string":
		return "a string"
	case "bool":
		return "true or false"
	case "map", "struct":
		return "an object"
	case "slice":
		return "an array"
	}
	return kind
}

// position converts a byte offset into a 1-based line and column.
func position(b []byte, off int64) (line, col int) {
	line, col = 1, 1
	for i := int64(0); i < off && i < int64(len(b)); i++ {
		if b[i] == '\n' {
			line, col = line+1, 1
		} else {
			col++
		}
	}
	return line, col
}
