package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"

	"github.com/portfolio-counselor/sagamachine/engine"
	"github.com/portfolio-counselor/sagamachine/engine/definition"
)

// maxInstanceBytes bounds the instance file migrate reads.
const maxInstanceBytes = 4 << 20

// sagasDirOf is where the definitions of a migration are: dir if given,
// else the directory above the migration's (sagas/migrations/x.yaml →
// sagas).
func sagasDirOf(migration, dir string) string {
	if dir != "" {
		return dir
	}
	return filepath.Dir(filepath.Dir(migration))
}

// loadDefinitions reads every definition of dir.
func loadDefinitions(dir string) ([]*definition.Definition, definition.Problems) {
	return definition.LoadDir(os.DirFS(dir))
}

// findDef returns the definition of saga at version, or nil.
func findDef(defs []*definition.Definition, saga string, version int) *definition.Definition {
	for _, d := range defs {
		if d.Saga == saga && d.Version == version {
			return d
		}
	}
	return nil
}

// validateMigration parses a migration and checks it against the
// definitions of sagasDir. ok is false when the definitions cannot be read.
func validateMigration(file string, data []byte, sagasDir string, stderr io.Writer) (definition.Problems, string, bool) {
	mig, problems := definition.ParseMigration(file, data)
	if mig == nil {
		return problems, "", true
	}
	dir := sagasDirOf(file, sagasDir)
	defs, defProblems := loadDefinitions(dir)
	if len(defs) == 0 && len(defProblems) > 0 {
		fmt.Fprintf(stderr, "sagactl validate: cannot read the definitions of %s in %s: %v\n", file, dir, defProblems[0].Message)
		return nil, "", false
	}
	problems = definition.CheckMigration(mig, findDef(defs, mig.Saga, mig.From), findDef(defs, mig.Saga, mig.To))
	summary := fmt.Sprintf("migration of %s v%d → v%d, %d states mapped", mig.Saga, mig.From, mig.To, len(mig.States))
	return problems, summary, true
}

func migrate(args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("migrate", "--dry-run [--sagas DIR] MIGRATION INSTANCE.json\n"+
		"   or: sagactl migrate --apply --url URL --to VERSION [--from VERSION] --reason TEXT [--token-file FILE] SAGA_ID...\n"+
		"   or: sagactl migrate --dry-run|--apply --url URL --all --saga NAME --from VERSION --to VERSION [--state STATE] [--limit N] [--reason TEXT] [--token-file FILE]", stderr)
	dryRun := fs.Bool("dry-run", false, "show what the migration does to the instance, here, without changing anything (with --all: to the sagas selected on saga-machine)")
	sagasDir := fs.String("sagas", "", "the definitions (default: the directory above the migration's)")
	apply := fs.Bool("apply", false, "migrate the running sagas SAGA_ID... (or --all) on the saga-machine at --url (operator role): a dry run there first, then the apply")
	base := fs.String("url", "", "saga-machine's address, e.g. http://127.0.0.1:8080 (with --apply or --all)")
	toVersion := fs.Int("to", 0, "the version to move the sagas to (with --apply or --all)")
	fromVersion := fs.Int("from", 0, "the version the sagas are expected on; a saga on another is refused (with --apply; required with --all)")
	reason := fs.String("reason", "", "why; recorded in each saga's timeline (with --apply, required)")
	tokenFile := fs.String("token-file", "", "file holding the bearer token (default: the environment variable SAGA_TOKEN)")
	all := fs.Bool("all", false, "instead of SAGA_IDs: every running saga of --saga on --from (in --state), as saga-machine selects them, a page at a time")
	sagaName := fs.String("saga", "", "with --all: the definition name, e.g. MANUAL_CREATE_ORDER")
	state := fs.String("state", "", "with --all: only the sagas in this state of --from")
	limit := fs.Int("limit", 0, "with --all: at most this many sagas (default: every one selected)")
	files, err := parseInterspersed(fs, args)
	if err != nil {
		return flagExit(err)
	}
	if *dryRun && *apply {
		fmt.Fprintln(stderr, "sagactl migrate: --dry-run and --apply exclude each other: --dry-run plans one instance file here (or, with --all, the sagas on saga-machine), --apply migrates running sagas on saga-machine (after a dry run there)")
		return exitUsage
	}
	if !*all && (*sagaName != "" || *state != "" || *limit != 0) {
		fmt.Fprintln(stderr, "sagactl migrate: --saga, --state and --limit select sagas with --all")
		return exitUsage
	}
	if *all {
		if !*dryRun && !*apply {
			fmt.Fprintln(stderr, "sagactl migrate: --all wants --dry-run (show what saga-machine would do to the sagas selected) or --apply (a dry run, then the apply)")
			return exitUsage
		}
		return migrateAllRemote(remoteArgs{base: *base, to: *toVersion, from: *fromVersion, reason: *reason, tokenFile: *tokenFile},
			bulkSelection{saga: *sagaName, state: *state, limit: *limit}, *dryRun, files, stdout, stderr)
	}
	if *apply {
		return migrateRemote(remoteArgs{base: *base, to: *toVersion, from: *fromVersion, reason: *reason, tokenFile: *tokenFile}, files, stdout, stderr)
	}
	if !*dryRun {
		fmt.Fprintln(stderr, "sagactl migrate: want --dry-run (plan one instance file here) or --apply (migrate running sagas on saga-machine, operator role, in one transaction that records it in each timeline)")
		return exitUsage
	}
	if len(files) != 2 {
		fmt.Fprintf(stderr, "sagactl migrate: want a MIGRATION and an INSTANCE.json, got %d files\n", len(files))
		fs.Usage()
		return exitUsage
	}
	migFile, instFile := files[0], files[1]
	data, err := readFile(migFile)
	if err != nil {
		fmt.Fprintf(stderr, "sagactl migrate: cannot read %s: %v\n", migFile, unwrapPathError(err))
		return exitUsage
	}
	problems, _, ok := validateMigration(migFile, data, *sagasDir, stderr)
	if !ok {
		return exitUsage
	}
	if len(problems) > 0 {
		for _, p := range problems {
			fmt.Fprintln(stderr, p)
		}
		fmt.Fprintf(stderr, "sagactl migrate: %s is not a valid migration; see sagactl validate\n", migFile)
		return exitInvalid
	}
	mig, _ := definition.ParseMigration(migFile, data)
	defs, _ := loadDefinitions(sagasDirOf(migFile, *sagasDir))
	from, err := engine.Compile(findDef(defs, mig.Saga, mig.From))
	if err != nil {
		fmt.Fprintf(stderr, "sagactl migrate: %v\n", err)
		return exitInvalid
	}
	to, err := engine.Compile(findDef(defs, mig.Saga, mig.To))
	if err != nil {
		fmt.Fprintf(stderr, "sagactl migrate: %v\n", err)
		return exitInvalid
	}
	inst, err := readInstance(instFile)
	if err != nil {
		fmt.Fprintf(stderr, "sagactl migrate: %v\n", err)
		return exitUsage
	}
	out, err := engine.PlanMigration(from, to, mig, inst)
	if err != nil {
		fmt.Fprintf(stderr, "sagactl migrate: saga %s cannot migrate [%s]: %s\n", inst.ID, engine.ErrorCode(err), errMessage(err))
		return exitInvalid
	}
	fmt.Fprintf(stdout, "dry run: saga %s would move from %s v%d to v%d (nothing is changed)\n", inst.ID, inst.Saga, inst.SagaVersion, out.SagaVersion)
	change := func(what, before, after string) {
		if before == after {
			fmt.Fprintf(stdout, "  %-8s %s (unchanged)\n", what, before)
		} else {
			fmt.Fprintf(stdout, "  %-8s %s → %s\n", what, before, after)
		}
	}
	change("state", inst.State, out.State)
	change("context", compact(inst.Context), compact(out.Context))
	change("keys", keysText(inst.Keys), keysText(out.Keys))
	change("timer", timerText(&inst), timerText(&out))
	pending := "-"
	if out.Pending != nil {
		pending = fmt.Sprintf("%s → %s, %d sends so far", out.Pending.Name, out.Pending.Participant, out.Attempts)
	}
	fmt.Fprintf(stdout, "  %-8s %s (kept)\n", "pending", pending)
	fmt.Fprintf(stdout, "  %-8s %d compensable steps (kept)\n", "undo", len(out.Undo))
	enc := json.NewEncoder(stdout)
	enc.SetIndent("", "  ")
	if err := enc.Encode(out); err != nil {
		fmt.Fprintf(stderr, "sagactl migrate: write JSON: %v\n", err)
		return exitUsage
	}
	return exitOK
}

// readInstance reads a saga instance (JSON) of at most maxInstanceBytes.
func readInstance(file string) (engine.Instance, error) {
	f, err := os.Open(file)
	if err != nil {
		return engine.Instance{}, fmt.Errorf("cannot read %s: %w", file, unwrapPathError(err))
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxInstanceBytes+1))
	if err != nil {
		return engine.Instance{}, fmt.Errorf("cannot read %s: %w", file, err)
	}
	if len(data) > maxInstanceBytes {
		return engine.Instance{}, fmt.Errorf("%s is larger than %d bytes: not a saga instance", file, maxInstanceBytes)
	}
	// GET /api/v1/sagas/{id} answers {"saga": {...}, "timeline": [...]}:
	// take its saga.
	var detail struct {
		Saga     json.RawMessage `json:"saga"`
		Timeline json.RawMessage `json:"timeline"`
	}
	if json.Unmarshal(data, &detail) == nil && len(detail.Saga) > 0 && detail.Saga[0] == '{' {
		data = detail.Saga
	}
	var inst engine.Instance
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&inst); err != nil {
		return engine.Instance{}, fmt.Errorf("%s is not a saga instance (JSON as GET /api/v1/sagas/{id} returns it): %w", file, err)
	}
	if inst.ID == "" || inst.Saga == "" || inst.SagaVersion == 0 || inst.State == "" {
		return engine.Instance{}, fmt.Errorf("%s lacks id, saga, saga_version or state", file)
	}
	return inst, nil
}

// compact prints a JSON document on one line.
func compact(raw json.RawMessage) string {
	if len(raw) == 0 {
		return "{}"
	}
	if c, err := json.Marshal(raw); err == nil {
		return string(c)
	}
	return string(raw)
}

func keysText(keys map[string]string) string {
	if len(keys) == 0 {
		return "-"
	}
	b, _ := json.Marshal(keys)
	return string(b)
}

func timerText(inst *engine.Instance) string {
	if inst.TimerAt == nil {
		return "-"
	}
	return inst.TimerAt.UTC().Format("2006-01-02T15:04:05Z07:00")
}

// remoteArgs are the flags of `sagactl migrate --apply`.
type remoteArgs struct {
	base, reason, tokenFile string
	to, from                int
}

// migrateRemote checks the flags of --apply and migrates ids on saga-machine.
func migrateRemote(a remoteArgs, ids []string, stdout, stderr io.Writer) int {
	usage := func(format string, args ...any) int {
		fmt.Fprintf(stderr, "sagactl migrate: "+format+"\n", args...)
		return exitUsage
	}
	switch {
	case a.base == "":
		return usage("--apply needs --url: the address of saga-machine")
	case a.to <= 0:
		return usage("--apply needs --to: the version to move the sagas to")
	case a.from < 0:
		return usage("--from must be a positive version")
	case strings.TrimSpace(a.reason) == "":
		return usage("--apply needs --reason: it is recorded in each saga's timeline")
	case len(ids) == 0:
		return usage("--apply needs the ids of the sagas to migrate")
	}
	token, err := readToken(a.tokenFile)
	if err != nil {
		return usage("%v", err)
	}
	base, err := baseURL(a.base, token != "")
	if err != nil {
		return usage("%v", err)
	}
	rm := remoteMigration{base: base, token: token, to: a.to, from: a.from, reason: a.reason,
		client: &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}
	return applyRemote(context.Background(), rm, ids, stdout, stderr)
}

// migrateAllRemote checks the flags of --all and migrates (or dry-runs) the
// sagas sel selects on saga-machine.
func migrateAllRemote(a remoteArgs, sel bulkSelection, dryOnly bool, ids []string, stdout, stderr io.Writer) int {
	usage := func(format string, args ...any) int {
		fmt.Fprintf(stderr, "sagactl migrate: "+format+"\n", args...)
		return exitUsage
	}
	switch {
	case len(ids) > 0:
		return usage("--all selects the sagas: give no SAGA_ID (got %s)", strings.Join(ids, " "))
	case a.base == "":
		return usage("--all needs --url: the address of saga-machine")
	case strings.TrimSpace(sel.saga) == "":
		return usage("--all needs --saga: the definition whose sagas migrate")
	case a.from <= 0:
		return usage("--all needs --from: the version the sagas are on")
	case a.to <= 0:
		return usage("--all needs --to: the version to move the sagas to")
	case a.from == a.to:
		return usage("--from and --to are both %d: nothing to migrate", a.to)
	case sel.limit < 0:
		return usage("--limit must be a positive number of sagas")
	case !dryOnly && strings.TrimSpace(a.reason) == "":
		return usage("--apply needs --reason: it is recorded in each saga's timeline")
	}
	token, err := readToken(a.tokenFile)
	if err != nil {
		return usage("%v", err)
	}
	base, err := baseURL(a.base, token != "")
	if err != nil {
		return usage("%v", err)
	}
	rm := remoteMigration{base: base, token: token, to: a.to, from: a.from, reason: a.reason,
		client: &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}
	return applyAll(context.Background(), rm, sel, dryOnly, stdout, stderr)
}
