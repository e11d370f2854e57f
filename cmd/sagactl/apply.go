package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"
)

// Remote migration limits.
const (
	// maxAnswerBytes bounds what sagactl reads of one saga-machine answer.
	maxAnswerBytes = 4 << 20
	// maxTokenBytes bounds the token file.
	maxTokenBytes = 64 << 10
	// requestTimeout bounds one request to saga-machine.
	requestTimeout = 30 * time.Second
)

// remoteMigration is what `sagactl migrate --apply` sends for each saga.
type remoteMigration struct {
	base, token string
	to, from    int
	reason      string
	client      *http.Client
}

// migrateAnswer is the part of POST /api/v1/sagas/{id}/migrations' answer
// sagactl prints.
type migrateAnswer struct {
	DryRun    bool   `json:"dry_run"`
	Applied   bool   `json:"applied"`
	Migration string `json:"migration"`
	Before    struct {
		Saga        string `json:"saga"`
		SagaVersion int    `json:"saga_version"`
		State       string `json:"state"`
		Rev         int64  `json:"rev"`
	} `json:"before"`
	After struct {
		SagaVersion int    `json:"saga_version"`
		State       string `json:"state"`
		Rev         int64  `json:"rev"`
	} `json:"after"`
}

// problemAnswer is an RFC 9457 problem as saga-machine answers it.
type problemAnswer struct {
	Status int    `json:"status"`
	Code   string `json:"code"`
	Detail string `json:"detail"`
	Title  string `json:"title"`
}

// applyRemote migrates each of ids on the saga-machine at base: first a dry
// run (which must pass), then the apply, each saga on its own. It returns
// the exit status: exitOK when every saga moved, exitInvalid when one was
// refused, exitUsage when saga-machine could not be reached or asked.
func applyRemote(ctx context.Context, rm remoteMigration, ids []string, stdout, stderr io.Writer) int {
	code := exitOK
	for _, id := range ids {
		dry, err := rm.post(ctx, id, true)
		if err != nil {
			fmt.Fprintf(stderr, "sagactl migrate: saga %s: %v\n", id, err)
			code = worse(code, exitCodeOf(err))
			continue
		}
		fmt.Fprintf(stdout, "saga %s: dry run: %s v%d %s → v%d %s (%s)\n", id, dry.Before.Saga, dry.Before.SagaVersion, dry.Before.State, dry.After.SagaVersion, dry.After.State, dry.Migration)
		res, err := rm.post(ctx, id, false)
		if err != nil {
			fmt.Fprintf(stderr, "sagactl migrate: saga %s: %v\n", id, err)
			code = worse(code, exitCodeOf(err))
			continue
		}
		fmt.Fprintf(stdout, "saga %s: applied: %s v%d %s → v%d %s (rev %d, recorded in its timeline)\n", id, res.Before.Saga, res.Before.SagaVersion, res.Before.State, res.After.SagaVersion, res.After.State, res.After.Rev)
	}
	return code
}

// worse returns the higher exit status.
func worse(a, b int) int { return max(a, b) }

// refusal is a problem saga-machine answered.
type refusal struct{ p problemAnswer }

func (r refusal) Error() string {
	detail := r.p.Detail
	if detail == "" {
		detail = r.p.Title
	}
	return fmt.Sprintf("refused (%d %s): %s", r.p.Status, r.p.Code, detail)
}

// exitCodeOf is exitInvalid for a refusal about the saga or migration (409,
// 404, 422), exitUsage for anything else (auth, transport, bad request).
func exitCodeOf(err error) int {
	if r, ok := err.(refusal); ok {
		switch r.p.Status {
		case http.StatusConflict, http.StatusNotFound, http.StatusUnprocessableEntity:
			return exitInvalid
		}
	}
	return exitUsage
}

// post sends one migration request for saga id.
func (rm remoteMigration) post(ctx context.Context, id string, dryRun bool) (migrateAnswer, error) {
	body := map[string]any{"to": rm.to, "dry_run": dryRun}
	if rm.from > 0 {
		body["from"] = rm.from
	}
	if rm.reason != "" {
		body["reason"] = rm.reason
	}
	var a migrateAnswer
	target := rm.base + "/api/v1/sagas/" + url.PathEscape(id) + "/migrations"
	if err := rm.send(ctx, target, body, &a); err != nil {
		return migrateAnswer{}, err
	}
	if a.DryRun != dryRun || a.Applied == dryRun {
		return migrateAnswer{}, fmt.Errorf("the answer of POST %s does not match the request (dry_run %v, applied %v)", target, a.DryRun, a.Applied)
	}
	return a, nil
}

// send POSTs body as JSON to target and decodes a 200 answer into out; any
// other status is a refusal with saga-machine's problem.
func (rm remoteMigration) send(ctx context.Context, target string, body, out any) error {
	b, err := json.Marshal(body)
	if err != nil {
		return fmt.Errorf("encode the request: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, target, bytes.NewReader(b))
	if err != nil {
		return fmt.Errorf("build the request: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, application/problem+json")
	if rm.token != "" {
		req.Header.Set("Authorization", "Bearer "+rm.token)
	}
	resp, err := rm.client.Do(req)
	if err != nil {
		return fmt.Errorf("POST %s: %w", target, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswerBytes+1))
	if err != nil {
		return fmt.Errorf("read the answer of POST %s: %w", target, err)
	}
	if len(data) > maxAnswerBytes {
		return fmt.Errorf("the answer of POST %s is larger than %d bytes", target, maxAnswerBytes)
	}
	if resp.StatusCode != http.StatusOK {
		var p problemAnswer
		if json.Unmarshal(data, &p) != nil || p.Status == 0 {
			p = problemAnswer{Status: resp.StatusCode, Title: strings.TrimSpace(abbreviate(string(data), 200))}
		}
		return refusal{p}
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("the answer of POST %s is not a migration result: %w", target, err)
	}
	return nil
}

// abbreviate cuts s to at most n bytes.
func abbreviate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// readToken reads the bearer token: from file when given (the first line),
// else from the environment variable SAGA_TOKEN; "" when neither (a
// saga-machine without authentication on loopback).
func readToken(file string) (string, error) {
	if file == "" {
		return strings.TrimSpace(os.Getenv("SAGA_TOKEN")), nil
	}
	f, err := os.Open(file)
	if err != nil {
		return "", fmt.Errorf("cannot read the token file: %w", unwrapPathError(err))
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxTokenBytes+1))
	if err != nil {
		return "", fmt.Errorf("cannot read the token file %s: %w", file, err)
	}
	if len(data) > maxTokenBytes {
		return "", fmt.Errorf("the token file %s is larger than %d bytes", file, maxTokenBytes)
	}
	tok, _, _ := strings.Cut(string(data), "\n")
	tok = strings.TrimSpace(tok)
	if tok == "" {
		return "", fmt.Errorf("the token file %s is empty", file)
	}
	return tok, nil
}

// baseURL checks saga-machine's URL: http or https, a host, no query; a
// token is sent over plain http only to a loopback host.
func baseURL(raw string, withToken bool) (string, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return "", fmt.Errorf("--url %q: %w", raw, err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		return "", fmt.Errorf("--url %q: want saga-machine's address, e.g. http://127.0.0.1:8080 or https://saga-machine.example", raw)
	}
	if withToken && u.Scheme == "http" && !loopbackHost(u.Hostname()) {
		return "", fmt.Errorf("--url %q: a token is sent only over https, or over http to a loopback address", raw)
	}
	return strings.TrimRight(u.String(), "/"), nil
}

func loopbackHost(h string) bool {
	return h == "localhost" || h == "::1" || strings.HasPrefix(h, "127.")
}

// bulkPage is how many sagas `sagactl migrate --all` asks saga-machine for
// at a time (POST /api/v1/migrations' default limit).
const bulkPage = 100

// bulkSelection is what `sagactl migrate --all` migrates: the running
// sagas of saga on version from (in state, if given), at most limit of
// them (0: every one).
type bulkSelection struct {
	saga, state string
	limit       int
}

// bulkAnswer is the part of POST /api/v1/migrations' answer sagactl reads.
type bulkAnswer struct {
	Saga      string     `json:"saga"`
	From      int        `json:"from"`
	To        int        `json:"to"`
	DryRun    bool       `json:"dry_run"`
	Migration string     `json:"migration"`
	Results   []bulkLine `json:"results"`
	Next      string     `json:"next"`
}

// bulkLine is one saga of a bulkAnswer.
type bulkLine struct {
	ID            string `json:"id"`
	Outcome       string `json:"outcome"`
	VersionBefore int    `json:"version_before"`
	StateBefore   string `json:"state_before"`
	VersionAfter  int    `json:"version_after"`
	StateAfter    string `json:"state_after"`
	Rev           int64  `json:"rev"`
	Code          string `json:"code"`
	Detail        string `json:"detail"`
}

// bulkTotals counts what `sagactl migrate --all` did.
type bulkTotals struct{ selected, wouldApply, applied, refused, failed int }

// applyAll migrates the running sagas sel selects on the saga-machine at
// rm.base, a page at a time: a dry run of the page there (which selects
// it), then, unless dryOnly, the apply of exactly the sagas the dry run
// found would migrate (by their ids, so nothing the dry run did not show
// is changed), each in its own transaction. Refused sagas are reported and
// left as they are. It returns exitOK when every saga selected migrated
// (or would), exitInvalid when one was refused or failed, exitUsage when
// saga-machine could not be reached or refused the request.
func applyAll(ctx context.Context, rm remoteMigration, sel bulkSelection, dryOnly bool, stdout, stderr io.Writer) int {
	target := rm.base + "/api/v1/migrations"
	var tot bulkTotals
	var migration string
	cursor := ""
	for {
		page := bulkPage
		if sel.limit > 0 {
			page = min(page, sel.limit-tot.selected)
		}
		body := map[string]any{"saga": sel.saga, "from": rm.from, "to": rm.to, "limit": page, "dry_run": true}
		if sel.state != "" {
			body["state"] = sel.state
		}
		if cursor != "" {
			body["cursor"] = cursor
		}
		var dry bulkAnswer
		if err := rm.send(ctx, target, body, &dry); err != nil {
			fmt.Fprintf(stderr, "sagactl migrate: %v\n", err)
			return worse(tot.code(), exitCodeOf(err))
		}
		if !dry.DryRun {
			fmt.Fprintf(stderr, "sagactl migrate: the answer of POST %s does not match the request (dry_run false)\n", target)
			return exitUsage
		}
		migration = dry.Migration
		tot.selected += len(dry.Results)
		var ids []string
		for _, l := range dry.Results {
			if l.Outcome == "would-apply" {
				ids = append(ids, l.ID)
				tot.wouldApply++
				fmt.Fprintf(stdout, "saga %s: dry run: %s v%d %s → v%d %s (%s)\n", l.ID, sel.saga, l.VersionBefore, l.StateBefore, l.VersionAfter, l.StateAfter, dry.Migration)
				continue
			}
			tot.count(l, stderr)
		}
		if !dryOnly && len(ids) > 0 {
			body := map[string]any{"saga": sel.saga, "from": rm.from, "to": rm.to, "ids": ids, "dry_run": false, "reason": rm.reason}
			if sel.state != "" {
				body["state"] = sel.state
			}
			var res bulkAnswer
			if err := rm.send(ctx, target, body, &res); err != nil {
				fmt.Fprintf(stderr, "sagactl migrate: %v\n", err)
				return worse(tot.code(), exitCodeOf(err))
			}
			if res.DryRun {
				fmt.Fprintf(stderr, "sagactl migrate: the answer of POST %s does not match the request (dry_run true)\n", target)
				return exitUsage
			}
			for _, l := range res.Results {
				if l.Outcome == "applied" {
					tot.applied++
					fmt.Fprintf(stdout, "saga %s: applied: %s v%d %s → v%d %s (rev %d, recorded in its timeline)\n", l.ID, sel.saga, l.VersionBefore, l.StateBefore, l.VersionAfter, l.StateAfter, l.Rev)
					continue
				}
				tot.count(l, stderr)
			}
		}
		cursor = dry.Next
		if cursor == "" || (sel.limit > 0 && tot.selected >= sel.limit) {
			break
		}
	}
	state := ""
	if sel.state != "" {
		state = " in " + sel.state
	}
	if dryOnly {
		fmt.Fprintf(stdout, "dry run of %s (%s v%d%s → v%d): %d selected, %d would migrate, %d refused, %d failed; nothing was changed\n",
			migration, sel.saga, rm.from, state, rm.to, tot.selected, tot.wouldApply, tot.refused, tot.failed)
	} else {
		fmt.Fprintf(stdout, "%s (%s v%d%s → v%d): %d selected, %d applied, %d refused, %d failed\n",
			migration, sel.saga, rm.from, state, rm.to, tot.selected, tot.applied, tot.refused, tot.failed)
	}
	if sel.limit > 0 && cursor != "" {
		fmt.Fprintf(stdout, "more sagas match: --limit %d stopped here; run it again for the next ones\n", sel.limit)
	}
	return tot.code()
}

// count reports a refused or failed saga on stderr and counts it.
func (t *bulkTotals) count(l bulkLine, stderr io.Writer) {
	switch l.Outcome {
	case "failed":
		t.failed++
	default:
		t.refused++
	}
	where := ""
	if l.VersionBefore > 0 {
		where = fmt.Sprintf(" (v%d %s)", l.VersionBefore, l.StateBefore)
	}
	fmt.Fprintf(stderr, "sagactl migrate: saga %s%s: %s (%s): %s\n", l.ID, where, l.Outcome, l.Code, l.Detail)
}

// code is the exit status of what was done so far.
func (t bulkTotals) code() int {
	if t.refused > 0 || t.failed > 0 {
		return exitInvalid
	}
	return exitOK
}
