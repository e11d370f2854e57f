// Package program is the common main of the repository's commands: a
// context that ends on SIGTERM or interrupt, an exit status 1 with the
// error on stderr, and the garbage collector's settings (TuneGC: GOGC 400
// and a soft memory limit under the container's, unless the environment
// says otherwise). It also holds what every HTTP server of the repository
// shares: NewServer (timeouts and header limit) and LoopbackHostOnly (the
// DNS-rebinding guard of servers that run without a production identity
// provider), the Kafka client flags every command takes (RegisterKafkaFlags:
// SASL credentials, static membership), the scrape token of /metrics
// (RegisterMetricsFlag, RequireToken) and the refusal of secrets left at
// the manifests' placeholder CHANGE_ME (RefusePlaceholders).
package program
