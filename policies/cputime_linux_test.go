package policies

import (
	"syscall"
	"unsafe"
)

// threadCPUTime is the CPU time the calling thread has used, in nanoseconds
// (clock_gettime(CLOCK_THREAD_CPUTIME_ID)). Unlike the wall clock it does not
// count the time the thread waits for a CPU, which on a shared machine
// dominates the tail of any latency measurement.
func threadCPUTime() (int64, bool) {
	const clockThreadCPUTimeID = 3
	var ts syscall.Timespec
	_, _, errno := syscall.Syscall(syscall.SYS_CLOCK_GETTIME, clockThreadCPUTimeID, uintptr(unsafe.Pointer(&ts)), 0)
	if errno != 0 {
		return 0, false
	}
	return ts.Nano(), true
}
