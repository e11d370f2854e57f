// Package program is the common main of the repository's commands: a
// context that ends on SIGTERM or interrupt, and an exit status 1 with the
// error on stderr. It also holds what every HTTP server of the repository
// shares: NewServer (timeouts and header limit) and LoopbackHostOnly (the
// DNS-rebinding guard of servers that run without a production identity
// provider), the Kafka client flags every command takes (RegisterKafkaFlags:
// SASL credentials, static membership) and the refusal of secrets left at
// the manifests' placeholder CHANGE_ME (RefusePlaceholders).
package program
