// Package flowtest checks that the three participant services agree on the
// MANUAL_CREATE_ORDER contract: it plays the saga-machine's part by hand,
// following the shipped definition (engine.Model.Apply for each event, the
// step's command, its compensable effects, and on failure the compensations
// newest first as engine.Plan gives them, each answered by its done event),
// over the services' real handlers and databases, on SQLite and PostgreSQL.
package flowtest
