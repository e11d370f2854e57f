// Package flowtest checks that the three participant services agree on the
// MANUAL_CREATE_ORDER contract: it plays the saga-machine's part by hand
// (route each event's command, merge each reply's top-level keys into the
// saga context) over the services' real handlers and databases.
package flowtest
