// Package definition reads saga definitions (sagas/*.yaml) written by business
// analysts, checks them strictly and reports every problem as
// FILE:LINE:COL: message.
//
// A Definition is the checked syntax tree of one file, with the position of
// every node, so that later checks (and tools such as sagactl) can point back
// at the YAML. The engine compiles a Definition into an executable model; this
// package knows nothing about running sagas.
//
// Parse walks the yaml.v3 node tree (never struct decoding), so unknown keys,
// duplicate keys and values of the wrong kind are errors with a position, and
// it reports every problem of a file at once, each with a stable Rule id
// (unknown-key, undeclared-participant, unreachable-state, ...). LoadDir does
// the same for every *.yaml / *.yml file of a directory (for example
// sagas.FS) and also refuses two files defining the same saga and version.
//
// Every reader goes through Parse, which enforces the limits of limits.go
// (file size, YAML nodes with aliases expanded, states, transitions, ...)
// before anything else and lists at most MaxProblems problems, so that
// reading any input costs time and memory roughly proportional to its size.
//
// The language's second version adds decisions on data (Transition.When),
// parallel steps (Transition.Branches and Join), payload mappings
// (Send.Payload) and event contracts (Definition.Events: a JSON Schema and
// the context keys an event writes). Their expressions are CEL (package
// engine/expr), compiled here so that a mistake is a problem with its
// position inside the expression; schemas are compiled here too, with a
// loader that fetches nothing. ParseWith reads schema files from the
// definition's directory. Migrations of running sagas from one version to
// another (sagas/migrations/*.yaml) are read by ParseMigration and checked
// against both definitions by CheckMigration (LoadMigrations for a
// directory).
//
// The language and every rule are described for analysts in
// docs/definition-language.md; schema/saga-definition.schema.json describes
// the same language as a JSON Schema for editors. The schema checks only the
// shape of a file; Parse is the authority.
package definition
