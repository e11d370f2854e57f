// Package program is the common main of the repository's commands: a
// context that ends on SIGTERM or interrupt, and an exit status 1 with the
// error on stderr.
package program
