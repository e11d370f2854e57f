// Package definition reads saga definitions (sagas/*.yaml) written by business
// analysts, checks them strictly and reports every problem as
// FILE:LINE:COL: message.
//
// A Definition is the checked syntax tree of one file, with the position of
// every node, so that later checks (and tools such as sagactl) can point back
// at the YAML. The engine compiles a Definition into an executable model; this
// package knows nothing about running sagas.
package definition
