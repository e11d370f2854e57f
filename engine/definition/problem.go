package definition

import (
	"fmt"
	"strings"
)

// Problem is one thing wrong with a definition file, at the YAML node that
// causes it.
type Problem struct {
	File    string `json:"file"`
	Line    int    `json:"line"`
	Col     int    `json:"col"`
	Rule    string `json:"rule"`    // stable identifier of the check, e.g. "unknown-key"
	Message string `json:"message"` // for a human; may end with a "did you mean" hint
}

// String formats the problem as FILE:LINE:COL: message, or FILE: message
// when the problem has no position (for example an unreadable file).
func (p Problem) String() string {
	if p.Line == 0 {
		return fmt.Sprintf("%s: %s", p.File, p.Message)
	}
	return fmt.Sprintf("%s:%d:%d: %s", p.File, p.Line, p.Col, p.Message)
}

// Problems is every problem found in one or more files, in a stable order
// (file, line, column, message). It implements error so that a caller that
// only wants "valid or not" can treat it as one.
type Problems []Problem

// Error joins all problems, one per line.
func (ps Problems) Error() string {
	lines := make([]string, len(ps))
	for i, p := range ps {
		lines[i] = p.String()
	}
	return strings.Join(lines, "\n")
}
