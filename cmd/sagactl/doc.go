// Command sagactl is the analyst's tool for saga definitions (sagas/*.yaml):
//
//	sagactl validate [--format text|json] FILE...   check files, report FILE:LINE:COL: problems
//	sagactl render [--format mermaid|dot] FILE      draw the state machine
//	sagactl simulate FILE EVENT[@participant]...    dry-run a saga, step by step
//	sagactl help                                    usage
//
// Exit status: 0 valid / done, 1 invalid definition or refused event, 2 usage
// error or unreadable file. See docs/sagactl.md.
package main
