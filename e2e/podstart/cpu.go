package main

import (
	"fmt"
	"os"
	"strconv"
	"strings"
)

// clockTicks is USER_HZ, the unit of /proc/<pid>/stat's CPU times: 100 on
// every Linux architecture Go supports.
const clockTicks = 100

// process is a process whose CPU time a run accounts for.
type process struct {
	name string
	pid  int
}

// parseProcesses reads --cpu: comma-separated name=pid.
func parseProcesses(s string) ([]process, error) {
	var ps []process
	if s == "" {
		return nil, nil
	}
	for _, f := range strings.Split(s, ",") {
		name, pid, ok := strings.Cut(strings.TrimSpace(f), "=")
		n, err := strconv.Atoi(pid)
		if !ok || err != nil || n <= 0 {
			return nil, fmt.Errorf("--cpu: %q is not name=pid", f)
		}
		ps = append(ps, process{name: name, pid: n})
	}
	return ps, nil
}

// cpuSample is the CPU time used so far, in ticks: per process (by name;
// processes sharing a name are added up), and by the whole machine (busy
// and total, from /proc/stat).
type cpuSample struct {
	proc               map[string]int64
	machineBusy, total int64
}

func sampleCPU(ps []process) cpuSample {
	s := cpuSample{proc: make(map[string]int64, len(ps))}
	for _, p := range ps {
		s.proc[p.name] += processTicks(p.pid)
	}
	s.machineBusy, s.total = machineTicks()
	return s
}

// processTicks is utime+stime of pid, 0 if it cannot be read.
func processTicks(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// The command name (field 2) is in parentheses and may hold spaces;
	// fields after it are counted from the last ')'.
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0
	}
	u, _ := strconv.ParseInt(f[11], 10, 64)
	s, _ := strconv.ParseInt(f[12], 10, 64)
	return u + s
}

// machineTicks is (busy, total) over all CPUs from /proc/stat's first line.
func machineTicks() (int64, int64) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	var busy, total int64
	for i, v := range f[1:] {
		n, _ := strconv.ParseInt(v, 10, 64)
		total += n
		if i != 3 && i != 4 { // idle, iowait
			busy += n
		}
	}
	return busy, total
}

// cpuUsage is the CPU seconds each process used between two samples, and
// how busy the whole machine was (1.0 = every core busy).
type cpuUsage struct {
	Seconds     map[string]float64 `json:"cpu_seconds,omitempty"`
	MachineBusy float64            `json:"machine_busy_fraction"`
}

func usageBetween(a, b cpuSample) cpuUsage {
	u := cpuUsage{Seconds: make(map[string]float64, len(b.proc))}
	for name, t := range b.proc {
		u.Seconds[name] = float64(t-a.proc[name]) / clockTicks
	}
	if d := b.total - a.total; d > 0 {
		u.MachineBusy = float64(b.machineBusy-a.machineBusy) / float64(d)
	}
	return u
}
