// Package problem writes RFC 9457 problem details (application/problem+json),
// the one error body of every HTTP server of saga-machine: the participant
// services, the SDK's admin API, saga-machine's API and the loopback guard
// of the development servers. Type URIs start with TypePrefix and end in a
// stable slug clients may switch on.
package problem
