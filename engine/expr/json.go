package expr

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"time"

	"cel.dev/cel-go/common/types"
	"cel.dev/cel-go/common/types/ref"
	"cel.dev/cel-go/common/types/traits"
)

// maxDepth bounds the nesting of values converted between JSON and CEL.
const maxDepth = 100

// Decode reads a JSON object (a payload or a context) into the values
// expressions see: whole numbers that fit in 64 bits become int64, other
// numbers float64. Empty input and null give an empty map.
func Decode(raw json.RawMessage) (map[string]any, error) {
	t := bytes.TrimSpace(raw)
	if len(t) == 0 || bytes.Equal(t, []byte("null")) {
		return map[string]any{}, nil
	}
	dec := json.NewDecoder(bytes.NewReader(t))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, fmt.Errorf("decode JSON for an expression: %w", err)
	}
	obj, ok := v.(map[string]any)
	if !ok {
		return nil, fmt.Errorf("decode JSON for an expression: want an object, got %s", jsonKind(v))
	}
	if err := numbers(obj, 0); err != nil {
		return nil, fmt.Errorf("decode JSON for an expression: %w", err)
	}
	return obj, nil
}

// numbers replaces the json.Numbers inside v (a map or a slice) in place.
func numbers(v any, depth int) error {
	if depth > maxDepth {
		return fmt.Errorf("nested deeper than %d", maxDepth)
	}
	conv := func(x any) (any, error) {
		switch x := x.(type) {
		case json.Number:
			if i, err := strconv.ParseInt(x.String(), 10, 64); err == nil {
				return i, nil
			}
			f, err := strconv.ParseFloat(x.String(), 64)
			if err != nil {
				return nil, fmt.Errorf("number %s: %w", x, err)
			}
			return f, nil
		case map[string]any, []any:
			return x, numbers(x, depth+1)
		}
		return x, nil
	}
	switch v := v.(type) {
	case map[string]any:
		for k, x := range v {
			y, err := conv(x)
			if err != nil {
				return err
			}
			v[k] = y
		}
	case []any:
		for i, x := range v {
			y, err := conv(x)
			if err != nil {
				return err
			}
			v[i] = y
		}
	}
	return nil
}

// Encode writes v (a value from Value) as JSON of at most MaxResultBytes.
func Encode(v any) (json.RawMessage, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("encode the mapping's result: %w", err)
	}
	if len(b) > MaxResultBytes {
		return nil, fmt.Errorf("encode the mapping's result: it is %d bytes of JSON, more than the limit of %d", len(b), MaxResultBytes)
	}
	return b, nil
}

// native converts a CEL value into a JSON-ready Go value.
func native(v ref.Val, depth int) (any, error) {
	if depth > maxDepth {
		return nil, fmt.Errorf("the result is nested deeper than %d", maxDepth)
	}
	switch v := v.(type) {
	case types.Null:
		return nil, nil
	case types.Bool:
		return bool(v), nil
	case types.Int:
		return int64(v), nil
	case types.Uint:
		return uint64(v), nil
	case types.Double:
		f := float64(v)
		if math.IsNaN(f) || math.IsInf(f, 0) {
			return nil, fmt.Errorf("the result holds %v, which JSON cannot carry", f)
		}
		return f, nil
	case types.String:
		return string(v), nil
	case types.Bytes:
		return base64.StdEncoding.EncodeToString(v), nil
	case types.Timestamp:
		return v.Time.UTC().Format(time.RFC3339Nano), nil
	case types.Duration:
		return v.Duration.String(), nil
	case traits.Mapper:
		out := map[string]any{}
		for it := v.Iterator(); it.HasNext() == types.True; {
			k := it.Next()
			ks, ok := k.(types.String)
			if !ok {
				return nil, fmt.Errorf("a map key of the result is %s; JSON object keys are strings", k.Type().TypeName())
			}
			x, err := native(v.Get(k), depth+1)
			if err != nil {
				return nil, err
			}
			out[string(ks)] = x
		}
		return out, nil
	case traits.Lister:
		n, ok := v.Size().(types.Int)
		if !ok {
			return nil, fmt.Errorf("a list of the result has no size")
		}
		out := make([]any, 0, int(n))
		for i := types.Int(0); i < n; i++ {
			x, err := native(v.Get(i), depth+1)
			if err != nil {
				return nil, err
			}
			out = append(out, x)
		}
		return out, nil
	}
	return nil, fmt.Errorf("the result holds a %s, which JSON cannot carry", v.Type().TypeName())
}

// jsonKind names the JSON kind of a decoded value.
func jsonKind(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case map[string]any:
		return "an object"
	case []any:
		return "an array"
	case string:
		return "a string"
	case bool:
		return "a boolean"
	case int64, uint64, float64, json.Number:
		return "a number"
	}
	return fmt.Sprintf("%T", v)
}
