// Package engine is the domain of saga-machine: the executable model of a saga
// definition (built on looplab/fsm, which stays hidden here), the message
// envelope exchanged with participants, saga instances and their history, the
// error type with stable codes, and the orchestrator that applies events to
// instances, puts a deadline on every command it sends (CommandDeadline) and
// compensates what a failed saga did, newest first (UndoEntry, Plan,
// Orchestrator.RetryCompensation and ResolveCompensation for operators).
// The model also decides on data (Model.ApplyWith), checks event contracts
// (Model.Contract), builds command payloads (CommandSpec.BuildPayload,
// Expand), describes parallel steps (Parallel) and plans the migration of a
// running saga to another version (PlanMigration), which the orchestrator
// applies to one saga (Orchestrator.Migrate) or to many, each in its own
// transaction (Orchestrator.MigrateMany).
//
// The package imports no database and no broker: storage and transport are
// small interfaces declared here and implemented in sub-packages
// (engine/sqlstore, engine/kafka); cmd/ wires them together.
package engine
