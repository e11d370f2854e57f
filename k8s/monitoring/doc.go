// Package monitoring holds the Prometheus alert rules and the Grafana
// dashboard of saga-machine and its participant services, and their tests
// (it has no Go code of its own):
//
//   - alerts.rules.yaml: the alert rules, a plain Prometheus rule file;
//     prometheus-rules.yaml: the ConfigMap saga-machine-alerts carrying it;
//   - dashboard.json: the Grafana dashboard; grafana-dashboard.yaml: the
//     ConfigMap saga-machine-dashboard carrying it (label grafana_dashboard
//     for Grafana's dashboard sidecar);
//   - network-policy.yaml: lets Prometheus (namespace monitoring) scrape the
//     four services on port 8080;
//   - saga-machine.scrape.yaml: the Prometheus scrape job of the four
//     services, sending the bearer token their /metrics require
//     (credentials_file, the Secret saga-metrics-token);
//   - testdata/alerts_test.yaml: promtool's unit tests of the rules.
//
// go test ./k8s/monitoring checks the rules with `promtool check rules`
// and `promtool test rules` (promtool built by scripts/promtool.sh), the
// scrape job with `promtool check config`, that
// the ConfigMaps carry the files byte for byte (-update rewrites them),
// and, on a running system (internal/system, SQLite and the embedded
// broker) that every metric any rule or dashboard query names is exported
// by saga-machine or a participant service, parsing each query with
// Prometheus' own PromQL parser (scripts/promql). See docs/operations.md,
// Monitoring.
package monitoring
