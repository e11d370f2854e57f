package main

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl/scram"

	"github.com/portfolio-counselor/sagamachine/internal/testenv"
)

// TestRefusedCredentialsFailFast: against the test broker, a wrong password
// fails the probe once the broker has refused it for
// credentialsRefusedAfter, with what to do, long before the probe's own
// timeout; the right password passes.
func TestRefusedCredentialsFailFast(t *testing.T) {
	kcfg := testenv.KafkaSecured(t)
	use := func(password string) {
		auth = []kgo.Opt{kgo.SASL(scram.Auth{User: kcfg.SASL.User, Pass: password}.AsSha512Mechanism())}
	}
	t.Cleanup(func() { auth = nil })

	use("not-" + kcfg.SASL.Password)
	ctx, cancel := context.WithTimeout(context.Background(), 3*credentialsRefusedAfter)
	defer cancel()
	err := run(ctx, kcfg.Brokers, false)
	if err == nil {
		t.Fatal("the probe passed with a wrong password")
	}
	if ctx.Err() != nil {
		t.Fatalf("the probe waited for its timeout instead of failing on the refusal: %v", err)
	}
	for _, want := range []string{"keeps refusing these credentials", "make clean-services"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}

	use(kcfg.SASL.Password)
	ctx2, cancel2 := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel2()
	if err := run(ctx2, kcfg.Brokers, false); err != nil {
		t.Fatalf("the probe failed with the right password: %v", err)
	}
}
