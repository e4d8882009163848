package main

import (
	"encoding/csv"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"time"
)

// results is the JSON file one invocation writes: <out-dir>/<backend>.json.
type results struct {
	Backend     string       `json:"backend"`
	Started     time.Time    `json:"started"`
	Pods        int          `json:"pods_per_run"`
	Concurrency int          `json:"concurrency_of_max_runs"`
	Runs        []runSummary `json:"runs"`
}

// runSummary is one run's figures. Latencies are in milliseconds; the
// startup latencies are from the client's clock (see the package doc), the
// Cond* ones from the Pods' one-second timestamps.
type runSummary struct {
	Run         string  `json:"run"`
	Rate        float64 `json:"rate_pods_per_s"` // 0: as fast as possible
	Concurrency int     `json:"concurrency,omitempty"`
	Pods        int     `json:"pods"`
	Created     int     `json:"created"`
	Failed      int     `json:"create_failed"`
	Scheduled   int     `json:"scheduled"`
	Running     int     `json:"running"`
	// Pods acknowledged per second, from the first create sent to the last
	// create acknowledged.
	Throughput  float64     `json:"create_throughput_pods_per_s"`
	CreateMs    percentiles `json:"create_latency_ms"`
	ScheduledMs percentiles `json:"create_to_scheduled_ms"`
	RunningMs   percentiles `json:"create_to_running_ms"`
	// Ready.lastTransitionTime - creationTimestamp, both truncated to the
	// second by the API.
	CondRunningMs percentiles `json:"cond_created_to_ready_ms_1s_resolution"`
	// From the first create sent to the last Pod seen Running.
	AllRunningS float64 `json:"first_create_to_all_running_s"`
	// From the run's start (before its watch) to all Running or its settle
	// deadline.
	CPU cpuUsage `json:"cpu"`
}

type percentiles struct {
	N   int     `json:"n"`
	P50 float64 `json:"p50"`
	P90 float64 `json:"p90"`
	P99 float64 `json:"p99"`
	Max float64 `json:"max"`
}

// percentilesOf uses the nearest-rank method on d (sorted in place).
func percentilesOf(d []time.Duration) percentiles {
	if len(d) == 0 {
		return percentiles{}
	}
	slices.Sort(d)
	rank := func(q float64) float64 {
		i := int(q*float64(len(d))+0.999999) - 1
		i = max(0, min(i, len(d)-1))
		return ms(d[i])
	}
	return percentiles{N: len(d), P50: rank(0.50), P90: rank(0.90), P99: rank(0.99), Max: ms(d[len(d)-1])}
}

func ms(d time.Duration) float64 {
	return float64(d.Microseconds()) / 1000
}

func summarize(spec runSpec, c config, times []*podTimes) runSummary {
	s := runSummary{Run: spec.name, Rate: spec.rate, Pods: len(times)}
	if spec.rate == 0 {
		s.Concurrency = c.concurrency
	}
	var create, sched, running, cond []time.Duration
	var first, lastAck, lastRunning time.Time
	for _, p := range times {
		if first.IsZero() || p.Sent.Before(first) {
			first = p.Sent
		}
		if p.CreateErr != "" {
			s.Failed++
			continue
		}
		s.Created++
		create = append(create, p.Acked.Sub(p.Sent))
		if p.Acked.After(lastAck) {
			lastAck = p.Acked
		}
		if !p.Scheduled.IsZero() {
			s.Scheduled++
			sched = append(sched, p.Scheduled.Sub(p.Sent))
		}
		if !p.Running.IsZero() {
			s.Running++
			running = append(running, p.Running.Sub(p.Sent))
			if p.Running.After(lastRunning) {
				lastRunning = p.Running
			}
		}
		if !p.Created.IsZero() && !p.CondReady.IsZero() {
			cond = append(cond, p.CondReady.Sub(p.Created))
		}
	}
	if s.Created > 0 {
		s.Throughput = float64(s.Created) / lastAck.Sub(first).Seconds()
	}
	if !lastRunning.IsZero() {
		s.AllRunningS = lastRunning.Sub(first).Seconds()
	}
	s.CreateMs = percentilesOf(create)
	s.ScheduledMs = percentilesOf(sched)
	s.RunningMs = percentilesOf(running)
	s.CondRunningMs = percentilesOf(cond)
	return s
}

// line is the run's one-line summary on stdout.
func (s runSummary) line(backend string) string {
	return fmt.Sprintf("%-8s %-8s created %d/%d (failed %d) running %d  create %.1f Pods/s p50 %.1f ms p99 %.1f ms  "+
		"scheduled p50 %.0f ms  running p50 %.0f p90 %.0f p99 %.0f ms  (cond p50 %.0f ms)",
		backend, s.Run, s.Created, s.Pods, s.Failed, s.Running, s.Throughput, s.CreateMs.P50, s.CreateMs.P99,
		s.ScheduledMs.P50, s.RunningMs.P50, s.RunningMs.P90, s.RunningMs.P99, s.CondRunningMs.P50)
}

func writeJSON(dir string, r results) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, r.Backend+".json"), append(b, '\n'), 0o644)
}

// writeCSV writes one row per Pod: client-side times in milliseconds after
// the run's first create was sent (empty if never seen), the Pod's own
// timestamps as RFC 3339 (one-second resolution).
func writeCSV(dir, backend, run string, times []*podTimes) error {
	f, err := os.Create(filepath.Join(dir, backend+"-"+run+".csv"))
	if err != nil {
		return err
	}
	defer f.Close()
	var first time.Time
	for _, p := range times {
		if first.IsZero() || p.Sent.Before(first) {
			first = p.Sent
		}
	}
	rel := func(t time.Time) string {
		if t.IsZero() {
			return ""
		}
		return strconv.FormatFloat(ms(t.Sub(first)), 'f', 3, 64)
	}
	stamp := func(t time.Time) string {
		if t.IsZero() {
			return ""
		}
		return t.UTC().Format(time.RFC3339)
	}
	w := csv.NewWriter(f)
	_ = w.Write([]string{"pod", "node", "sent_ms", "acked_ms", "scheduled_ms", "running_ms", "create_error",
		"creation_timestamp", "cond_scheduled", "cond_ready"})
	for _, p := range times {
		_ = w.Write([]string{p.Name, p.Node, rel(p.Sent), rel(p.Acked), rel(p.Scheduled), rel(p.Running), p.CreateErr,
			stamp(p.Created), stamp(p.CondScheduled), stamp(p.CondReady)})
	}
	w.Flush()
	if err := w.Error(); err != nil {
		return err
	}
	return f.Close()
}
