package procstack

import "syscall"

// sysProcAttr makes the kernel kill a child when the test binary dies
// without its cleanups (a panic, a test timeout).
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
