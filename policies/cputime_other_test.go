//go:build !linux

package policies

// threadCPUTime is not available here: benchmarks report wall-clock figures only.
func threadCPUTime() (int64, bool) { return 0, false }
