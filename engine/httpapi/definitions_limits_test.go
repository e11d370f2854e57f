package httpapi_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"

	"github.com/portfolio-counselor/sagamachine/engine"
	"github.com/portfolio-counselor/sagamachine/engine/definition"
	"github.com/portfolio-counselor/sagamachine/engine/httpapi"
)

// maxValidateAnswer bounds any answer of POST /definitions/validate: at
// most MaxProblems+1 problems, each with a file name of at most 255 bytes
// and a message of at most MaxMessageBytes (JSON escaping at most doubles
// them), plus field names.
const maxValidateAnswer = (definition.MaxProblems + 1) * (2*(255+definition.MaxMessageBytes) + 100)

var yamlHeader = []string{"Content-Type", "application/yaml"}

// aliasBombYAML is the attack of issue 8: states states, one transition
// anchored as &T accepting its event in all of them, and copies of `- *T`.
func aliasBombYAML(states, copies int) string {
	var b strings.Builder
	b.WriteString("saga: BOMB\nversion: 1\nparticipants:\n  shop: { topic: SHOP_TOPIC }\ntransitions:\n")
	b.WriteString("  - { on: E0, by: shop, from: [], to: S0 }\n  - &T { on: GO, by: shop, from: [S0")
	for i := 1; i < states; i++ {
		fmt.Fprintf(&b, ", S%d", i)
	}
	b.WriteString("], to: DONE }\n")
	b.WriteString(strings.Repeat("  - *T\n", copies))
	b.WriteString("final: [DONE]\n")
	return b.String()
}

// bigValidYAML is a valid definition of definition.MaxTransitions
// transitions padded with a description to exactly size bytes.
func bigValidYAML(tb testing.TB, size int) string {
	tb.Helper()
	var b strings.Builder
	b.WriteString("saga: BIG\nversion: 1\nparticipants:\n  shop: { topic: SHOP_TOPIC }\ntransitions:\n")
	b.WriteString("  - { on: E0, by: shop, from: [], to: S0 }\n")
	for i := 1; i < definition.MaxTransitions; i++ {
		fmt.Fprintf(&b, "  - { on: E%d, by: shop, from: [S%d], to: S%d }\n", i, i-1, i)
	}
	fmt.Fprintf(&b, "final: [S%d]\n", definition.MaxTransitions-1)
	pad := size - b.Len() - len("description: \n")
	if pad < 0 {
		tb.Fatalf("the transitions alone take %d bytes, more than %d", b.Len(), size)
	}
	return "description: " + strings.Repeat("x", pad) + "\n" + b.String()
}

// TestValidateRefusesHostileDefinitions sends what an attacker would send to
// the validate endpoint and checks the refusal, the number of problems and
// the size of the answer; and that validating changed nothing.
func TestValidateRefusesHostileDefinitions(t *testing.T) {
	if httpapi.MaxDefinitionBody != definition.MaxFileBytes {
		t.Fatalf("MaxDefinitionBody = %d, definition.MaxFileBytes = %d: the endpoint and the parser must agree", httpapi.MaxDefinitionBody, definition.MaxFileBytes)
	}
	e := newEnv(t, "", envOptions{})
	tests := []struct {
		name      string
		target    string
		body      string
		wantValid bool
		wantRule  string // a rule that must be among the problems
		wantCount int    // exact number of problems, 0: do not check
	}{
		{"alias bomb of issue 8 (1,000 states, 1,000 copies)", "/api/v1/definitions/validate", aliasBombYAML(1000, 1000), false, "alias-too-big", definition.MaxProblems + 1},
		{"alias bomb under the alias limit", "/api/v1/definitions/validate", aliasBombYAML(90, 4100), false, "too-many-nodes", 1},
		{"valid definition of 1 MiB", "/api/v1/definitions/validate", bigValidYAML(t, definition.MaxFileBytes), true, "", 0},
		{"hundreds of problems", "/api/v1/definitions/validate",
			"saga: X\nversion: 1\nparticipants:\n  shop: { topic: T }\ntransitions:\n  - { on: E, by: shop, from: [], to: A }\nfinal: [A" + strings.Repeat(", A", 5000) + "]\n",
			false, "too-many-problems", definition.MaxProblems + 1},
		{"a 600 KB value quoted in a message", "/api/v1/definitions/validate?file=" + url.QueryEscape(strings.Repeat("f", 255)),
			"saga: X\n? " + strings.Repeat("k", 600_000) + "\n: 1\n", false, "unknown-key", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if len(tt.body) > httpapi.MaxDefinitionBody {
				t.Fatalf("test body is %d bytes, above the limit", len(tt.body))
			}
			rec := e.do(t, "POST", tt.target, tt.body, yamlHeader...)
			if size := rec.Body.Len(); size > maxValidateAnswer {
				t.Errorf("answer is %d bytes, want at most %d", size, maxValidateAnswer)
			}
			res := decode[httpapi.ValidationResult](t, rec, http.StatusOK)
			if res.Valid != tt.wantValid {
				t.Fatalf("valid = %t, want %t; first problems: %v", res.Valid, tt.wantValid, res.Problems[:min(3, len(res.Problems))])
			}
			if len(res.Problems) > definition.MaxProblems+1 {
				t.Errorf("got %d problems, want at most %d", len(res.Problems), definition.MaxProblems+1)
			}
			if tt.wantCount != 0 && len(res.Problems) != tt.wantCount {
				t.Errorf("got %d problems, want %d", len(res.Problems), tt.wantCount)
			}
			if tt.wantRule != "" && !hasRule(res.Problems, tt.wantRule) {
				t.Errorf("no %s problem among %d", tt.wantRule, len(res.Problems))
			}
			for _, p := range res.Problems {
				if len(p.Message) > definition.MaxMessageBytes {
					t.Errorf("message of %d bytes, want at most %d", len(p.Message), definition.MaxMessageBytes)
				}
			}
		})
	}
	// Validating never creates or moves a saga.
	counts, err := e.store.CountByState(context.Background())
	if err != nil {
		t.Fatalf("CountByState: %v", err)
	}
	if len(counts) != 0 {
		t.Errorf("sagas after validating: %+v, want none", counts)
	}
}

func hasRule(ps []definition.Problem, rule string) bool {
	for _, p := range ps {
		if p.Rule == rule {
			return true
		}
	}
	return false
}

// countingReader is an endless body that counts what the server read.
type countingReader struct {
	mu sync.Mutex
	n  int
}

func (c *countingReader) Read(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i := range p {
		p[i] = '#'
	}
	c.n += len(p)
	return len(p), nil
}

// TestValidateRefusesOversizedBodies: a body above the limit, announced or
// streamed without a length, is refused with 413 after reading at most the
// limit (plus a buffer), never all of it.
func TestValidateRefusesOversizedBodies(t *testing.T) {
	e := newEnv(t, "", envOptions{})
	rec := e.do(t, "POST", "/api/v1/definitions/validate", strings.Repeat("#", httpapi.MaxDefinitionBody+1), yamlHeader...)
	problemOf(t, rec, http.StatusRequestEntityTooLarge, httpapi.CodeTooLarge)

	endless := &countingReader{}
	req := httptest.NewRequest("POST", "/api/v1/definitions/validate", io.NopCloser(endless))
	req.ContentLength = -1 // streamed, no length announced
	req.Header.Set("Content-Type", "application/yaml")
	rec = httptest.NewRecorder()
	e.handler.ServeHTTP(rec, req)
	problemOf(t, rec, http.StatusRequestEntityTooLarge, httpapi.CodeTooLarge)
	if limit := httpapi.MaxDefinitionBody + 64<<10; endless.n > limit {
		t.Errorf("the server read %d bytes of an endless body, want at most %d", endless.n, limit)
	}
}

// TestValidateRefusesHostileFileNames: the file name is repeated in every
// problem, so a long one (or one with control characters, which would
// forge lines in sagactl-style output) is refused.
func TestValidateRefusesHostileFileNames(t *testing.T) {
	e := newEnv(t, "", envOptions{})
	for _, file := range []string{strings.Repeat("f", 256), strings.Repeat("f", 100_000), "a.yaml\nother.yaml:1:1: forged", "a\x00.yaml", "\xff.yaml"} {
		rec := e.do(t, "POST", "/api/v1/definitions/validate?file="+url.QueryEscape(file), "saga: X\n", yamlHeader...)
		problemOf(t, rec, http.StatusBadRequest, engine.CodeInvalid)
	}
}

// TestValidateWaitsForAFreeSlot: only two definitions are parsed at once; a
// third caller waits, and one that gives up while waiting gets 503 without
// its body being read.
func TestValidateWaitsForAFreeSlot(t *testing.T) {
	e := newEnv(t, "", envOptions{})
	good := "saga: X\nversion: 1\nparticipants:\n  shop: { topic: T }\ntransitions:\n  - { on: E, by: shop, from: [], to: A }\nfinal: [A]\n"
	var wg sync.WaitGroup
	writers := make([]*io.PipeWriter, 2)
	recs := make([]*httptest.ResponseRecorder, 2)
	for i := range writers {
		pr, pw := io.Pipe()
		writers[i] = pw
		req := httptest.NewRequest("POST", "/api/v1/definitions/validate", pr)
		req.Header.Set("Content-Type", "application/yaml")
		recs[i] = httptest.NewRecorder()
		wg.Add(1)
		go func() {
			defer wg.Done()
			e.handler.ServeHTTP(recs[i], req)
		}()
		// The write returns once the handler reads the body, that is once
		// it holds a slot.
		if _, err := io.WriteString(pw, good[:1]); err != nil {
			t.Fatalf("write body %d: %v", i, err)
		}
	}
	third := &countingReader{}
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // the caller gave up
	req := httptest.NewRequestWithContext(ctx, "POST", "/api/v1/definitions/validate", io.NopCloser(third))
	req.Header.Set("Content-Type", "application/yaml")
	rec := httptest.NewRecorder()
	e.handler.ServeHTTP(rec, req)
	problemOf(t, rec, http.StatusServiceUnavailable, engine.CodeUnavailable)
	if third.n != 0 {
		t.Errorf("the server read %d bytes of the waiting caller's body, want 0", third.n)
	}
	for i, pw := range writers {
		if _, err := io.WriteString(pw, good[1:]); err != nil {
			t.Fatalf("write body %d: %v", i, err)
		}
		pw.Close()
	}
	wg.Wait()
	for i, rec := range recs {
		res := decode[httpapi.ValidationResult](t, rec, http.StatusOK)
		if !res.Valid {
			t.Errorf("request %d: got %+v, want valid", i, res)
		}
	}
	// The slots are free again.
	if res := decode[httpapi.ValidationResult](t, e.do(t, "POST", "/api/v1/definitions/validate", good, yamlHeader...), http.StatusOK); !res.Valid {
		t.Errorf("after the slots were freed: got %+v, want valid", res)
	}
}
