// Package storage_test runs kube-apiserver's own storage test suite
// (k8s.io/apiserver/pkg/storage/testing) against a plain etcd, the oracle,
// and against ste-router in front of three etcd shards, and prints per case
// what each backend did.
package storage_test

import (
	"fmt"
	"os"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"k8s.io/apiserver/pkg/features"
	etcdfeature "k8s.io/apiserver/pkg/storage/feature"
	utilfeature "k8s.io/apiserver/pkg/util/feature"
	featuregatetesting "k8s.io/component-base/featuregate/testing"
)

type outcome string

const (
	passed  outcome = "pass"
	failed  outcome = "FAIL"
	skipped outcome = "skip"
)

// results collects every case's outcome per backend for the summary.
type results struct {
	mu       sync.Mutex
	outcomes map[string]map[string]outcome // case -> backend -> outcome
	took     map[string]time.Duration      // backend -> time spent in cases
	order    []string
}

var summary = &results{outcomes: map[string]map[string]outcome{}, took: map[string]time.Duration{}}

func (r *results) record(backend, name string, t *testing.T, took time.Duration) {
	o := passed
	switch {
	case t.Failed():
		o = failed
	case t.Skipped():
		o = skipped
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.outcomes[name] == nil {
		r.outcomes[name] = map[string]outcome{}
		r.order = append(r.order, name)
	}
	r.outcomes[name][backend] = o
	r.took[backend] += took
}

func (r *results) print() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.order) == 0 {
		return
	}
	width := len("case")
	for _, name := range r.order {
		width = max(width, len(name))
	}
	var b strings.Builder
	fmt.Fprintf(&b, "\n=== storage conformance: upstream k8s.io/apiserver/pkg/storage/testing ===\n")
	fmt.Fprintf(&b, "%-*s", width, "case")
	for _, be := range backends {
		fmt.Fprintf(&b, "  %-6s", be.name)
	}
	b.WriteString("\n")
	var routerOnly []string
	for _, name := range r.order {
		fmt.Fprintf(&b, "%-*s", width, name)
		for _, be := range backends {
			o := r.outcomes[name][be.name]
			if o == "" {
				o = "-"
			}
			fmt.Fprintf(&b, "  %-6s", o)
		}
		b.WriteString("\n")
		if r.outcomes[name]["router"] == failed && r.outcomes[name]["etcd"] == passed {
			routerOnly = append(routerOnly, name)
		}
	}
	b.WriteString("\n")
	for _, be := range backends {
		counts := map[outcome]int{}
		run := 0
		for _, name := range r.order {
			if o, ok := r.outcomes[name][be.name]; ok {
				counts[o]++
				if o != skipped {
					run++
				}
			}
		}
		fmt.Fprintf(&b, "%s: %d run, %d passed, %d failed, %d skipped (%s in cases)\n",
			be.name, run, counts[passed], counts[failed], counts[skipped], r.took[be.name].Round(time.Second))
	}
	how := "in-process etcd server code (go.etcd.io/etcd/server/v3/embed)"
	if bin := os.Getenv("STE_ETCD_BIN"); bin != "" {
		how = "etcd binary " + bin
	}
	version, _ := oracleVersion.Load().(string)
	fmt.Fprintf(&b, "oracle and router shards: etcd %s, %s\n", version, how)
	sort.Strings(routerOnly)
	fmt.Fprintf(&b, "failing on the router only: %d\n", len(routerOnly))
	for _, name := range routerOnly {
		fmt.Fprintf(&b, "  %s\n", name)
	}
	fmt.Print(b.String())
}

func TestMain(m *testing.M) {
	code := m.Run()
	summary.print()
	os.Exit(code)
}

// TestStorageConformance runs every case on the oracle etcd first, then on
// the router, each case on a backend of its own.
func TestStorageConformance(t *testing.T) {
	// RangeStream is an etcd 3.7 RPC; STE serves the etcd 3.6 API, against
	// which kube-apiserver pages with Range. The gate is off for both
	// backends so that they are compared on the same requests, except in
	// the cases named rangeStream=true (kube-apiserver's default: against
	// a server without RangeStream it falls back to Range).
	featuregatetesting.SetFeatureGateDuringTest(t, utilfeature.DefaultFeatureGate, features.EtcdRangeStream, false)
	for _, be := range backends {
		t.Run(be.name, func(t *testing.T) {
			for _, c := range allCases() {
				t.Run(c.name, func(t *testing.T) {
					start := time.Now()
					t.Cleanup(func() { summary.record(be.name, c.name, t, time.Since(start)) })
					if reason, ok := c.skip[be.name]; ok {
						t.Skip(reason)
					}
					// What the storage layer learnt about one backend's
					// features (RangeStream unimplemented, say) must not
					// carry over to the next case's backend.
					saved := etcdfeature.DefaultFeatureSupportChecker
					etcdfeature.DefaultFeatureSupportChecker = etcdfeature.NewDefaultFeatureSupportChecker()
					t.Cleanup(func() { etcdfeature.DefaultFeatureSupportChecker = saved })
					for gate, on := range c.gates {
						featuregatetesting.SetFeatureGateDuringTest(t, utilfeature.DefaultFeatureGate, gate, on)
					}
					c.run(t, be.start(t))
				})
			}
		})
	}
}
