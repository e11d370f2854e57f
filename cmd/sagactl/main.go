package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/portfolio-counselor/sagamachine/engine"
	"github.com/portfolio-counselor/sagamachine/engine/definition"
)

// Exit codes.
const (
	exitOK      = 0 // everything valid, saga simulated to the end of the events
	exitInvalid = 1 // a definition has problems, or the simulation was refused an event
	exitUsage   = 2 // bad command line or unreadable file
)

const usage = `sagactl checks, draws and dry-runs saga definitions (sagas/*.yaml).

Usage:
  sagactl validate [--format text|json] [--sagas DIR] FILE...
        Check every file. Prints "FILE: ok (SAGA vN, N states, M transitions)"
        for a valid file, and every problem as FILE:LINE:COL: message.
        --format json prints one JSON array of problems instead. A migration
        (a file with migration:) is checked against the definitions in DIR
        (default: the directory above the migration's, e.g. sagas/).
  sagactl render [--format mermaid|dot] FILE
        Print the state machine as a Mermaid stateDiagram-v2 (default) or a
        Graphviz digraph.
  sagactl simulate [--payload EVENT=FILE]... FILE EVENT[@participant][=JSON]...
        Start a saga and apply the events in order, each emitted by the
        participant the definition expects in the current state (or the one
        written after @), with the payload written after = (or read from the
        --payload file of that event). Payloads are checked against the
        events' contracts, decide the decisions and join the context that
        mappings build commands from. Prints one line per step with the
        commands sent and the timeouts and retries armed in the new state.
        In a parallel step the next EVENTs may be the branches' replies; the
        join's event follows by itself. When an event leads into a failed
        state, prints the compensations to send, newest first; the next
        EVENTs are then their done events, in that order.
  sagactl migrate --dry-run [--sagas DIR] MIGRATION INSTANCE.json
        Show what MIGRATION (sagas/migrations/*.yaml) does to one saga
        instance (JSON, as GET /api/v1/sagas/{id} returns it), without
        changing anything. Applying it is saga-machine's (operator role).
  sagactl migrate --apply --url URL --to VERSION [--from VERSION] --reason TEXT
          [--token-file FILE] SAGA_ID...
        Migrate running sagas on the saga-machine at URL by its loaded
        migration to VERSION: for each saga a dry run there, then the apply,
        recorded in the saga's timeline. Needs the saga-operator role; the
        bearer token is read from FILE or the environment variable
        SAGA_TOKEN (sent only over https or to a loopback address).
  sagactl migrate --dry-run|--apply --url URL --all --saga NAME --from VERSION
          --to VERSION [--state STATE] [--limit N] [--reason TEXT]
          [--token-file FILE]
        The same for every running saga of NAME on version --from (in
        STATE), as saga-machine selects them, 100 at a time (at most N in
        all): a dry run of each page there, then with --apply the apply of
        the sagas the dry run showed, each in its own transaction.
  sagactl help
        Print this text.

Exit status: 0 all valid / simulation done / every saga migrated, 1 invalid
definition, refused event or saga that cannot migrate, 2 usage error,
unreadable file or saga-machine unreachable or refusing the caller.
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run is sagactl with its arguments (without the program name) and its
// output streams; it returns the exit status.
func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return exitUsage
	}
	cmd, rest := args[0], args[1:]
	switch cmd {
	case "validate":
		return validate(rest, stdout, stderr)
	case "render":
		return render(rest, stdout, stderr)
	case "simulate":
		return simulate(rest, stdout, stderr)
	case "migrate":
		return migrate(rest, stdout, stderr)
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, usage)
		return exitOK
	default:
		fmt.Fprintf(stderr, "sagactl: unknown command %q (commands: validate, render, simulate, migrate, help)\n", cmd)
		return exitUsage
	}
}

// parseInterspersed parses flags that may appear before, between or after
// the positional arguments (sagactl validate a.yaml --format json). "--"
// ends the flags.
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		rem := fs.Args()
		if len(rem) == 0 {
			return pos, nil
		}
		if i := len(args) - len(rem); i > 0 && args[i-1] == "--" {
			return append(pos, rem...), nil // the flag package consumed "--"
		}
		pos = append(pos, rem[0])
		args = rem[1:]
	}
}

// newFlagSet returns a flag set for a sub-command whose errors and help go to
// stderr with the sub-command's usage line.
func newFlagSet(name, synopsis string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("sagactl "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: sagactl %s %s\n", name, synopsis)
		fs.PrintDefaults()
	}
	return fs
}

// flagExit maps a flag parsing error to an exit status: -h is not an error.
func flagExit(err error) int {
	if errors.Is(err, flag.ErrHelp) {
		return exitOK
	}
	return exitUsage
}

// load reads and parses one file, reading no more than the parser accepts
// (definition.ReadAll). A read error is reported to stderr and gives
// ok=false with no problems.
func load(cmd, file string, stderr io.Writer) (def *definition.Definition, problems definition.Problems, ok bool) {
	data, err := readFile(file)
	if err != nil {
		fmt.Fprintf(stderr, "sagactl %s: cannot read %s: %v\n", cmd, file, unwrapPathError(err))
		return nil, nil, false
	}
	// Schema files (schema: schemas/x.json) are read beside the file.
	def, problems = definition.ParseWith(file, data, definition.Options{Files: os.DirFS(filepath.Dir(file))})
	return def, problems, true
}

func readFile(file string) ([]byte, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return definition.ReadAll(f)
}

func unwrapPathError(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// compile parses and compiles one file, printing problems to stderr. It
// returns the exit status to use when m is nil.
func compile(cmd, file string, stderr io.Writer) (*engine.Model, int) {
	def, problems, ok := load(cmd, file, stderr)
	if !ok {
		return nil, exitUsage
	}
	if len(problems) > 0 {
		for _, p := range problems {
			fmt.Fprintln(stderr, p)
		}
		fmt.Fprintf(stderr, "sagactl %s: %s is not a valid saga definition (%d problems); see sagactl validate\n", cmd, file, len(problems))
		return nil, exitInvalid
	}
	m, err := engine.Compile(def)
	if err != nil {
		fmt.Fprintf(stderr, "%s:%d:%d: %v\n", file, def.Pos.Line, def.Pos.Col, err)
		return nil, exitInvalid
	}
	return m, exitOK
}

func validate(args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("validate", "[--format text|json] [--sagas DIR] FILE...", stderr)
	format := fs.String("format", "text", "output format: text or json")
	sagasDir := fs.String("sagas", "", "the definitions a migration is checked against (default: the directory above the migration's)")
	files, err := parseInterspersed(fs, args)
	if err != nil {
		return flagExit(err)
	}
	if *format != "text" && *format != "json" {
		fmt.Fprintf(stderr, "sagactl validate: unknown format %q (want text or json)\n", *format)
		return exitUsage
	}
	if len(files) == 0 {
		fmt.Fprintln(stderr, "sagactl validate: no FILE given")
		fs.Usage()
		return exitUsage
	}
	all := definition.Problems{}
	unreadable := false
	for _, file := range files {
		if data, err := readFile(file); err == nil && definition.IsMigration(data) {
			problems, summary, ok := validateMigration(file, data, *sagasDir, stderr)
			if !ok {
				unreadable = true
				continue
			}
			all = append(all, problems...)
			if *format == "text" {
				for _, p := range problems {
					fmt.Fprintln(stdout, p)
				}
				if len(problems) == 0 {
					fmt.Fprintf(stdout, "%s: ok (%s)\n", file, summary)
				}
			}
			continue
		}
		def, problems, ok := load("validate", file, stderr)
		if !ok {
			unreadable = true
			continue
		}
		if len(problems) == 0 {
			if _, err := engine.Compile(def); err != nil {
				problems = definition.Problems{{File: file, Line: def.Pos.Line, Col: def.Pos.Col, Rule: "compile", Message: err.Error()}}
			}
		}
		all = append(all, problems...)
		if *format == "text" {
			for _, p := range problems {
				fmt.Fprintln(stdout, p)
			}
			if len(problems) == 0 {
				fmt.Fprintf(stdout, "%s: ok (%s v%d, %d states, %d transitions)\n",
					file, def.Saga, def.Version, len(def.States), len(def.Transitions))
			}
		}
	}
	if *format == "json" {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(all); err != nil {
			fmt.Fprintf(stderr, "sagactl validate: write JSON: %v\n", err)
			return exitUsage
		}
	}
	switch {
	case unreadable:
		return exitUsage
	case len(all) > 0:
		return exitInvalid
	}
	return exitOK
}

func render(args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("render", "[--format mermaid|dot] FILE", stderr)
	format := fs.String("format", "mermaid", "output format: mermaid or dot")
	files, err := parseInterspersed(fs, args)
	if err != nil {
		return flagExit(err)
	}
	renderers := map[string]func(*engine.Model) string{"mermaid": engine.RenderMermaid, "dot": engine.RenderDOT}
	r, ok := renderers[*format]
	if !ok {
		fmt.Fprintf(stderr, "sagactl render: unknown format %q (want mermaid or dot)\n", *format)
		return exitUsage
	}
	if len(files) != 1 {
		fmt.Fprintf(stderr, "sagactl render: want exactly one FILE, got %d\n", len(files))
		fs.Usage()
		return exitUsage
	}
	m, code := compile("render", files[0], stderr)
	if m == nil {
		return code
	}
	fmt.Fprint(stdout, r(m))
	return exitOK
}

// errMessage is an engine error's message and cause, without the
// operation (the row already says what was done).
func errMessage(err error) string {
	var e *engine.Error
	if errors.As(err, &e) {
		if e.Err != nil {
			return e.Message + ": " + e.Err.Error()
		}
		return e.Message
	}
	return err.Error()
}

func stateName(s string) string {
	if s == "" {
		return "(none)"
	}
	return s
}

func commandText(c *engine.CommandSpec) string {
	if c == nil {
		return "-"
	}
	return fmt.Sprintf("%s → %s (%s)", c.Name, c.Participant, c.Topic)
}

// armedText describes the timers the engine starts when the saga enters
// step.To: the state's timeout and the re-sends of the command just sent.
func armedText(m *engine.Model, step engine.Step) string {
	var parts []string
	if t := m.Timeout(step.To); t != nil {
		parts = append(parts, fmt.Sprintf("timeout %s → %s", duration(t.After), t.Event.Value))
	}
	if step.Send != nil && step.Send.Retry != nil {
		r := step.Send.Retry
		parts = append(parts, fmt.Sprintf("re-send %s (%d sends, backoff %s..%s) then %s", step.Send.Name, r.Attempts, duration(r.Backoff), duration(r.MaxBackoff), r.Exhausted.Value))
	}
	if len(parts) == 0 {
		return "-"
	}
	return strings.Join(parts, "; ")
}

// duration formats d without trailing zero units: 10m, 2s, 1h30m.
func duration(d time.Duration) string {
	s := d.String()
	s = strings.TrimSuffix(s, "m0s")
	if s != d.String() {
		s += "m"
	}
	if t := strings.TrimSuffix(s, "h0m"); t != s {
		s = t + "h"
	}
	return s
}
