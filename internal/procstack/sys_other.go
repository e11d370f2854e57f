//go:build !linux

package procstack

import "syscall"

// sysProcAttr: no parent-death signal outside Linux; the test's cleanups
// kill the processes.
func sysProcAttr() *syscall.SysProcAttr { return nil }
