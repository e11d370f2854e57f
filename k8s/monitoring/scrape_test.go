package monitoring_test

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// scrapeFile is the Prometheus scrape configuration of the services (for
// scrape_config_files; go test ./k8s checks what it scrapes and that it
// sends the pods' token).
const scrapeFile = "saga-machine.scrape.yaml"

// credentialsFile matches the credentials_file settings of scrapeFile.
var credentialsFile = regexp.MustCompile(`(?m)^(\s*credentials_file:\s*)(\S+)\s*$`)

// checkScrape runs promtool check config on a prometheus.yml that loads
// scrape (the scrape file's text) through scrape_config_files, with every
// credentials_file pointing at a token file in a temporary directory
// (created unless noToken): promtool checks that the file exists.
func checkScrape(t *testing.T, tl tools, scrape string, noToken bool) (string, error) {
	t.Helper()
	dir := t.TempDir()
	token := filepath.Join(dir, "token")
	if !noToken {
		if err := os.WriteFile(token, []byte("0123456789abcdef0123456789abcdef\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	scrape = credentialsFile.ReplaceAllString(scrape, "${1}"+token)
	if err := os.WriteFile(filepath.Join(dir, "scrape.yaml"), []byte(scrape), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(cfg, []byte("scrape_config_files: [scrape.yaml]\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return promtool(t, tl, "check", "config", cfg)
}

// TestPromtoolCheckScrapeConfig: Prometheus accepts the scrape file
// (strictly: an unknown or misspelled field is an error) and reads the
// token from credentials_file; promtool refuses the file broken each of
// those ways, so the check cannot silently pass.
func TestPromtoolCheckScrapeConfig(t *testing.T) {
	tl := needTools(t)
	data, err := os.ReadFile(scrapeFile)
	if err != nil {
		t.Fatal(err)
	}
	scrape := string(data)
	m := credentialsFile.FindAllStringSubmatch(scrape, -1)
	if len(m) == 0 {
		t.Fatalf("%s has no credentials_file: the services answer 401 to a scrape without the token", scrapeFile)
	}
	for _, c := range m {
		if !filepath.IsAbs(c[2]) {
			t.Errorf("%s: credentials_file %s is not an absolute path (Prometheus would resolve it against its configuration's directory)", scrapeFile, c[2])
		}
	}
	if out, err := checkScrape(t, tl, scrape, false); err != nil {
		t.Fatalf("promtool check config (scrape_config_files: %s): %v\n%s", scrapeFile, err, out)
	}
	for _, tc := range []struct {
		name, old, new string
		noToken        bool
		want           string
	}{
		{name: "token file missing", noToken: true, want: "credentials or bearer token file"},
		{name: "misspelled field", old: "credentials_file:", new: "credential_file:", want: "credential_file not found"},
		{name: "two credentials", old: "credentials_file:", new: "credentials: x\n      credentials_file:", want: "at most one of"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := scrape
			if tc.old != "" {
				if !strings.Contains(s, tc.old) {
					t.Fatalf("%s has no %q", scrapeFile, tc.old)
				}
				s = strings.Replace(s, tc.old, tc.new, 1)
			}
			out, err := checkScrape(t, tl, s, tc.noToken)
			if err == nil || !strings.Contains(out, tc.want) {
				t.Errorf("promtool check config: err %v, output %q; want a refusal containing %q", err, out, tc.want)
			}
		})
	}
}
