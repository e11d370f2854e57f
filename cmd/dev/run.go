package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/portfolio-counselor/sagamachine/internal/program"
	"github.com/portfolio-counselor/sagamachine/internal/system"
	"github.com/portfolio-counselor/sagamachine/internal/tracing"
)

// demoTimeout bounds the demo (portfolio, two orders, both sagas final).
const demoTimeout = 2 * time.Minute

type options struct {
	cfg    system.Config
	level  slog.Level
	noDemo bool
	// tracing is --otlp-endpoint: every component's spans, as service
	// saga-machine-dev (one process).
	tracing *tracing.Config
}

func envOr(env func(string) string, name, def string) string {
	if v := env(name); v != "" {
		return v
	}
	return def
}

func parseFlags(args []string, env func(string) string, stderr io.Writer) (options, error) {
	fs := flag.NewFlagSet("dev", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o options
	var brokers, level string
	fs.StringVar(&o.cfg.DataDir, "db-dir", envOr(env, "SAGA_DEV_DB_DIR", system.DefaultDataDir), "directory of the SQLite files and the embedded broker's data (env SAGA_DEV_DB_DIR)")
	fs.StringVar(&o.cfg.Postgres, "postgres", env("SAGA_DEV_POSTGRES"), "PostgreSQL server URL, e.g. postgres://postgres@127.0.0.1:55432/postgres?sslmode=disable: each service gets its own database on it (env SAGA_DEV_POSTGRES)")
	fs.StringVar(&brokers, "brokers", env("SAGA_KAFKA_BROKERS"), "Kafka brokers, comma-separated, instead of the embedded broker (env SAGA_KAFKA_BROKERS)")
	fs.StringVar(&o.cfg.Listen, "listen", envOr(env, "SAGA_LISTEN", system.DefaultListen), "saga-machine's API and console address (env SAGA_LISTEN)")
	fs.BoolVar(&o.cfg.EphemeralPorts, "free-ports", false, "listen on free ports (every service and the embedded broker); the URLs are printed")
	fs.StringVar(&level, "log-level", envOr(env, "SAGA_LOG_LEVEL", "warn"), "log level on stderr: debug, info, warn or error (env SAGA_LOG_LEVEL)")
	fs.BoolVar(&o.noDemo, "no-demo", false, "do not create the demo user and orders")
	// With --brokers every component uses these credentials (with make up's
	// broker: its super user admin, since one process runs every principal).
	kf := program.RegisterKafkaFlags(fs, env)
	o.tracing = tracing.RegisterFlags(fs, "saga-machine-dev", env)
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	var err error
	if o.cfg.KafkaSASL, err = kf.SASL(); err != nil {
		return o, err
	}
	if o.cfg.KafkaTLS, err = kf.TLS(); err != nil {
		return o, err
	}
	if o.cfg.KafkaTLS != nil && brokers == "" {
		return o, errors.New("--kafka-tls (or --kafka-tls-ca-file) needs --brokers: the embedded broker has no TLS")
	}
	if o.cfg.KafkaSASL.Enabled() && brokers == "" {
		return o, fmt.Errorf("--kafka-user %s needs --brokers: the embedded broker has no authentication", o.cfg.KafkaSASL.User)
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	for _, b := range strings.Split(brokers, ",") {
		if b = strings.TrimSpace(b); b != "" {
			o.cfg.Brokers = append(o.cfg.Brokers, b)
		}
	}
	if brokers != "" && len(o.cfg.Brokers) == 0 {
		return o, fmt.Errorf("--brokers %q names no broker", brokers)
	}
	if o.cfg.EphemeralPorts && o.cfg.Listen == system.DefaultListen {
		o.cfg.Listen = ""
	}
	if err := o.level.UnmarshalText([]byte(level)); err != nil {
		return o, fmt.Errorf("--log-level %q: %w", level, err)
	}
	return o, nil
}

// run is the whole program: it starts the system, runs the demo, prints
// where to look and serves until ctx ends.
func run(ctx context.Context, args []string, env func(string) string, stdout, stderr io.Writer) error {
	o, err := parseFlags(args, env, stderr)
	if err != nil {
		return err
	}
	o.cfg.Logger = slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: o.level}))
	stopTracing, err := tracing.Setup(ctx, *o.tracing)
	if err != nil {
		return err
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		_ = stopTracing(sctx) // best effort at exit
	}()
	sys, err := system.Start(ctx, o.cfg)
	if err != nil {
		return err
	}
	defer sys.Close()
	printServices(stdout, sys, o.cfg)
	printLogins(stdout, sys)

	if !o.noDemo {
		dctx, cancel := context.WithTimeout(ctx, demoTimeout)
		res, err := sys.RunDemo(dctx)
		cancel()
		if err != nil {
			return err
		}
		printDemo(stdout, sys, res)
	} else {
		tok, err := sys.Token(system.DemoUser, "saga-operator")
		if err != nil {
			return err
		}
		printToken(stdout, sys, tok, "")
	}
	fmt.Fprintln(stdout, "\nServing until Ctrl-C.")

	select {
	case <-ctx.Done():
	case err := <-sys.Failed():
		sys.Close()
		return err
	}
	fmt.Fprintln(stdout, "Stopping: finishing work in flight...")
	if err := sys.Close(); err != nil {
		return err
	}
	fmt.Fprintln(stdout, "Stopped.")
	return nil
}

func printServices(w io.Writer, sys *system.System, cfg system.Config) {
	db := "SQLite files under " + cfg.DataDir
	if cfg.Postgres != "" {
		db = "PostgreSQL, one database per service (" + sys.SagaDBURL + ", …)"
	}
	kafka := "embedded Kafka broker on " + strings.Join(sys.Brokers, ",") + " (data under " + cfg.DataDir + "/kafka)"
	if !sys.Embedded {
		kafka = "Kafka at " + strings.Join(sys.Brokers, ",")
	}
	fmt.Fprintf(w, "saga-machine dev: the whole system in one process\n  databases: %s\n  broker:    %s\n\n", db, kafka)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "  saga-machine API + console\t%s\t(console %s/console/)\n", sys.URLs.SagaMachine, sys.URLs.SagaMachine)
	fmt.Fprintf(tw, "  deals\t%s\t(POST /deals, GET /deals)\n", sys.URLs.Deals)
	fmt.Fprintf(tw, "  profile\t%s\t(GET /portfolios, /portfolios/{id}/snapshots, /portfolios/{id}/deposits)\n", sys.URLs.Profile)
	fmt.Fprintf(tw, "  notification\t%s\t(GET /notifications)\n", sys.URLs.Notification)
	fmt.Fprintf(tw, "  OIDC issuer\t%s\t(the console's login page; POST /token: sub=…&roles=… for curl)\n", sys.URLs.Issuer)
	tw.Flush()
}

func printDemo(w io.Writer, sys *system.System, res system.DemoResult) {
	how := "created"
	if !res.Created {
		how = "existing"
	}
	funded := "funded by an earlier run"
	if res.DepositID != "" {
		funded = "deposit " + res.DepositID
	}
	fmt.Fprintf(w, "\ndemo user %q (role saga-operator), portfolio %s (%s; %s %s deposited by %q, role funding-operator: %s)\n",
		res.User, res.PortfolioID, how, system.DemoCash, system.DemoCurrency, system.TreasuryUser, funded)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, o := range res.Orders {
		r := o.Request
		deal := "deal " + o.DealStatus
		if o.Reason != "" {
			deal += ": " + o.Reason
		}
		again := ""
		if o.Replayed {
			again = " (from an earlier run)"
		}
		fmt.Fprintf(tw, "  %s\t%s %s %s @ %s %s\tsaga %s\t%s (%s)\t%s%s\n",
			o.Label, r.Side, r.Quantity, r.Instrument, r.Price, r.Currency, o.SagaID, o.State, o.Status, deal, again)
	}
	if b := res.Basket; b.SagaID != "" {
		var lines []string
		for _, l := range b.Request.Lines {
			lines = append(lines, fmt.Sprintf("%s %s %s @ %s %s", l.Side, l.Quantity, l.Instrument, l.Price, l.Currency))
		}
		again := ""
		if b.Replayed {
			again = " (from an earlier run)"
		}
		fmt.Fprintf(tw, "  basket\t%s\tsaga %s\t%s (%s)\tbasket %s%s\n",
			strings.Join(lines, " + "), b.SagaID, b.State, b.Status, b.BasketStatus, again)
	}
	tw.Flush()
	fmt.Fprintf(w, "\nWhere to look:\n")
	for _, o := range res.Orders {
		fmt.Fprintf(w, "  console   %s/console/#/sagas/%s\n", sys.URLs.SagaMachine, o.SagaID)
	}
	if res.Basket.SagaID != "" {
		fmt.Fprintf(w, "  console   %s/console/#/sagas/%s   (BASKET_ORDER: its parallel step)\n", sys.URLs.SagaMachine, res.Basket.SagaID)
	}
	fmt.Fprintf(w, "  API       GET %s/api/v1/sagas   (and GET /api/v1/sagas/{id} for a timeline)\n", sys.URLs.SagaMachine)
	printToken(w, sys, res.Token, res.PortfolioID)
}

// printLogins tells how to sign in to the console: the accounts of the
// in-process issuer's login page.
func printLogins(w io.Writer, sys *system.System) {
	fmt.Fprintf(w, "\nConsole: open %s/console/ and sign in on the issuer's login page as\n", sys.URLs.SagaMachine)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, u := range system.DemoLogins {
		roles := "no role: the console refuses"
		if len(u.Roles) > 0 {
			roles = strings.Join(u.Roles, ", ")
		}
		fmt.Fprintf(tw, "  user %s\tpassword %s\t(%s)\n", u.Username, u.Password, roles)
	}
	tw.Flush()
}

func printToken(w io.Writer, sys *system.System, token, portfolioID string) {
	fmt.Fprintf(w, "\nFor curl: a token of user demo with the saga-operator role (valid %s), accepted by every service:\n\n", system.DefaultTokenTTL)
	fmt.Fprintf(w, "export SAGA_TOKEN=%s\n\n", token)
	fmt.Fprintf(w, "curl -s -H \"Authorization: Bearer $SAGA_TOKEN\" %s/api/v1/sagas\n", sys.URLs.SagaMachine)
	if portfolioID != "" {
		fmt.Fprintf(w, "curl -s -H \"Authorization: Bearer $SAGA_TOKEN\" -H 'Content-Type: application/json' \\\n"+
			"  -d '{\"portfolio_id\":\"%s\",\"side\":\"buy\",\"instrument\":\"ACME\",\"quantity\":\"1\",\"price\":\"150.00\",\"currency\":\"USD\"}' \\\n"+
			"  %s/deals\n", portfolioID, sys.URLs.Deals)
		fmt.Fprintf(w, "curl -s -H \"Authorization: Bearer $SAGA_TOKEN\" %s/portfolios/%s\n", sys.URLs.Profile, portfolioID)
		fmt.Fprintf(w, "# funding is a funding operator's deposit (never into her own portfolio):\n")
		fmt.Fprintf(w, "FUND_TOKEN=$(curl -s -d sub=%s -d roles=funding-operator %s/token | sed 's/.*\"access_token\":\"\\([^\"]*\\)\".*/\\1/')\n", system.TreasuryUser, sys.URLs.Issuer)
		fmt.Fprintf(w, "curl -s -H \"Authorization: Bearer $FUND_TOKEN\" -H 'Content-Type: application/json' -H \"Idempotency-Key: $(date +%%s)\" \\\n"+
			"  -d '{\"amount\":\"500.00\",\"currency\":\"USD\",\"reason\":\"top-up\"}' %s/portfolios/%s/deposits\n", sys.URLs.Profile, portfolioID)
		fmt.Fprintf(w, "curl -s -H \"Authorization: Bearer $SAGA_TOKEN\" %s/notifications\n", sys.URLs.Notification)
	}
}
