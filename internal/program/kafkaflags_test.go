package program

import (
	"bytes"
	"crypto/tls"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/portfolio-counselor/sagamachine/internal/testenv"
)

func TestKafkaFlags(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "pw")
	if err := os.WriteFile(file, []byte("from-file\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	placeholderFile := filepath.Join(dir, "placeholder")
	if err := os.WriteFile(placeholderFile, []byte("CHANGE_ME\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name     string
		args     []string
		env      map[string]string
		wantUser string
		wantPW   string
		wantID   string
		wantErr  string
	}{
		{name: "none", args: nil},
		{name: "flags", args: []string{"--kafka-user", "deals", "--kafka-password", "p1", "--kafka-instance-id", "deals-0"}, wantUser: "deals", wantPW: "p1", wantID: "deals-0"},
		{name: "env", env: map[string]string{EnvKafkaUser: "profile", EnvKafkaPassword: "p2", EnvKafkaInstanceID: "profile-1"}, wantUser: "profile", wantPW: "p2", wantID: "profile-1"},
		{name: "file", args: []string{"--kafka-user", "u", "--kafka-password-file", file}, wantUser: "u", wantPW: "from-file"},
		{name: "file from env", env: map[string]string{EnvKafkaUser: "u", EnvKafkaPasswordFile: file}, wantUser: "u", wantPW: "from-file"},
		{name: "password without user", args: []string{"--kafka-password", "p"}, wantErr: "no --kafka-user"},
		{name: "user without password", args: []string{"--kafka-user", "u"}, wantErr: "needs a password"},
		{name: "two sources", args: []string{"--kafka-user", "u", "--kafka-password", "p", "--kafka-password-file", file}, wantErr: "given twice"},
		{name: "placeholder password", args: []string{"--kafka-user", "u", "--kafka-password", "CHANGE_ME"}, wantErr: "CHANGE_ME"},
		{name: "placeholder in env", env: map[string]string{EnvKafkaUser: "u", EnvKafkaPassword: "x-CHANGE_ME"}, wantErr: EnvKafkaPassword},
		{name: "placeholder in file", args: []string{"--kafka-user", "u", "--kafka-password-file", placeholderFile}, wantErr: "CHANGE_ME"},
		{name: "missing file", args: []string{"--kafka-user", "u", "--kafka-password-file", filepath.Join(dir, "nope")}, wantErr: "password file"},
		{name: "unknown mechanism", args: []string{"--kafka-user", "u", "--kafka-password", "p", "--kafka-sasl-mechanism", "GSSAPI"}, wantErr: "mechanism"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fs := flag.NewFlagSet("t", flag.ContinueOnError)
			k := RegisterKafkaFlags(fs, func(n string) string { return tc.env[n] })
			if err := fs.Parse(tc.args); err != nil {
				t.Fatalf("Parse: %v", err)
			}
			s, err := k.SASL()
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("SASL() error = %v, want one containing %q", err, tc.wantErr)
				}
				if strings.Contains(err.Error(), "p1") || strings.Contains(err.Error(), "from-file") {
					t.Errorf("error %q shows a password", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("SASL(): %v", err)
			}
			if s.User != tc.wantUser || s.Password != tc.wantPW || k.InstanceID() != tc.wantID {
				t.Errorf("got user %q password %q id %q, want %q %q %q", s.User, s.Password, k.InstanceID(), tc.wantUser, tc.wantPW, tc.wantID)
			}
		})
	}
}

// TestKafkaFlagsUsageShowsNoPassword: -h prints the defaults; a password
// from the environment must not be one of them.
func TestKafkaFlagsUsageShowsNoPassword(t *testing.T) {
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	var out bytes.Buffer
	fs.SetOutput(&out)
	RegisterKafkaFlags(fs, func(n string) string {
		if n == EnvKafkaPassword {
			return "env-secret"
		}
		return ""
	})
	fs.PrintDefaults()
	if strings.Contains(out.String(), "env-secret") {
		t.Errorf("usage shows the password:\n%s", out.String())
	}
}

// TestKafkaFlagsTLS: --kafka-tls and --kafka-tls-ca-file (and their
// variables) give a TLS 1.2+ configuration that verifies the brokers
// (against the file's CAs, or the system's without a file); no flag gives
// none; a CA file that cannot be read or holds no certificate is refused.
func TestKafkaFlagsTLS(t *testing.T) {
	dir := t.TempDir()
	ca := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(ca, testenv.CAPEM(t, "test CA"), 0o600); err != nil {
		t.Fatal(err)
	}
	notPEM := filepath.Join(dir, "not.pem")
	if err := os.WriteFile(notPEM, []byte("-----BEGIN NOTHING-----\nxx\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		args    []string
		env     map[string]string
		wantTLS bool
		wantCA  bool
		wantErr string
	}{
		{name: "none", wantTLS: false},
		{name: "--kafka-tls", args: []string{"--kafka-tls"}, wantTLS: true},
		{name: "env true", env: map[string]string{EnvKafkaTLS: "true"}, wantTLS: true},
		{name: "env false", env: map[string]string{EnvKafkaTLS: "false"}, wantTLS: false},
		{name: "env not a boolean", env: map[string]string{EnvKafkaTLS: "yes please"}, wantErr: "want true or false"},
		{name: "CA file", args: []string{"--kafka-tls-ca-file", ca}, wantTLS: true, wantCA: true},
		{name: "CA file from env", env: map[string]string{EnvKafkaTLSCAFile: ca}, wantTLS: true, wantCA: true},
		{name: "missing CA file", args: []string{"--kafka-tls-ca-file", filepath.Join(dir, "nope")}, wantErr: "CA file"},
		{name: "CA file without a certificate", args: []string{"--kafka-tls-ca-file", notPEM}, wantErr: "holds no PEM certificate"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fs := flag.NewFlagSet("t", flag.ContinueOnError)
			k := RegisterKafkaFlags(fs, func(n string) string { return tc.env[n] })
			if err := fs.Parse(tc.args); err != nil {
				t.Fatalf("Parse: %v", err)
			}
			got, err := k.TLS()
			if wantFile := tc.wantCA && tc.wantErr == ""; (k.TLSCAFile() == ca) != wantFile {
				t.Errorf("TLSCAFile() = %q, want %q: %v", k.TLSCAFile(), ca, wantFile)
			}
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("TLS() error = %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if (got != nil) != tc.wantTLS {
				t.Fatalf("TLS() = %v, want TLS %v", got, tc.wantTLS)
			}
			if got == nil {
				return
			}
			if got.InsecureSkipVerify || got.MinVersion < tls.VersionTLS12 || (got.RootCAs != nil) != tc.wantCA {
				t.Errorf("TLS() = skip verify %v, min version %x, own CAs %v; want verified, TLS 1.2+, own CAs %v",
					got.InsecureSkipVerify, got.MinVersion, got.RootCAs != nil, tc.wantCA)
			}
		})
	}
}
