// Package expr is the expression language of saga definitions: CEL (the
// Common Expression Language, cel.dev/cel-go), as Kubernetes uses it for
// validation rules. Definitions use it for the conditions of decisions
// (`when:`), the payload mappings of commands (`payload:`), the lists a
// parallel branch fans out over (`for_each:`) and the context transform of
// a migration.
//
// Every expression is compiled once, when the definition is loaded
// (Compile): a syntax or type error is a problem of the file, with the
// position inside the expression, never a surprise at run time. Each kind
// of expression (Kind) sees a small, fixed set of variables:
//
//	event    the event's payload (a map; {} when the event has none)  conditions only
//	context  the saga's context document (a map)                      every kind
//	saga     {id, name, version} of the saga instance                  every kind
//	item     the element of the for_each list                          fan-out payloads only
//	index    its position in that list (int, from 0)                   fan-out payloads only
//
// JSON values become CEL values this way: objects are maps, arrays are
// lists, strings, booleans and null as they are, whole numbers that fit in
// 64 bits are int and every other number is double (CEL compares int and
// double with each other; to compute with both, convert with double(x) or
// int(x)).
//
// Expressions are bounded: the text is at most MaxBytes bytes and MaxNodes
// syntax nodes nested at most MaxDepth deep; every evaluation is stopped
// once it costs more than MaxCost (CEL's runtime cost, roughly the number
// of operations and of bytes or elements touched), so that a hostile
// expression cannot burn the engine's CPU; and a mapping's result is at
// most MaxResultBytes of JSON. Only CEL's standard library is available: no
// extension can read files, the network or the clock.
package expr
