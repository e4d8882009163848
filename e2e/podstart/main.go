// Command podstart measures how fast a Kubernetes control plane creates
// Pods and starts them: it creates Pods at a fixed rate (or as fast as N
// concurrent creators can), watches them, and reports create throughput,
// create latency and pod startup latency (create → scheduled → Running),
// the experiment of the STE paper. Nodes are expected to be simulated by
// kwok, which marks a bound Pod Running without running anything.
//
// Every timestamp of the startup latency is taken on the client: the time
// the create request was sent, and the times the watch delivered the first
// event with spec.nodeName set and the first with status.phase=Running.
// The Pod's own condition timestamps (creationTimestamp, PodScheduled and
// Ready lastTransitionTime) have a resolution of one second; they are kept
// in the per-Pod CSV and reported only as a cross-check.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
)

// config is what the flags ask for.
type config struct {
	kubeconfig  string
	backend     string
	namespace   string
	pods        int
	runs        []runSpec
	concurrency int
	maxInFlight int
	settle      time.Duration
	pause       time.Duration
	outDir      string
	nodeLabel   string
	qps         float64
	processes   []process
}

// runSpec is one run: a fixed rate in Pods/s, or rate 0 for "as fast as
// the concurrent creators can".
type runSpec struct {
	name string
	rate float64
}

func parseRuns(s string) ([]runSpec, error) {
	var runs []runSpec
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "max" {
			runs = append(runs, runSpec{name: "max", rate: 0})
			continue
		}
		r, err := strconv.ParseFloat(f, 64)
		if err != nil || r <= 0 {
			return nil, fmt.Errorf("--runs: %q is neither a rate in Pods/s (> 0) nor 'max'", f)
		}
		runs = append(runs, runSpec{name: "rate" + f, rate: r})
	}
	return runs, nil
}

func parseFlags() (config, error) {
	var c config
	var runs, cpu string
	flag.StringVar(&c.kubeconfig, "kubeconfig", os.Getenv("KUBECONFIG"), "kubeconfig of the cluster (an admin: it creates a namespace and Pods)")
	flag.StringVar(&c.backend, "backend", "unnamed", "name of the Pod storage under test, written into the results (e.g. ste, etcd3)")
	flag.StringVar(&c.namespace, "namespace", "podstart", "namespace the Pods are created in (created if missing)")
	flag.IntVar(&c.pods, "pods", 200, "Pods per run")
	flag.StringVar(&runs, "runs", "10,50,100,max", "comma-separated runs: a rate in Pods/s, or 'max' (as fast as --concurrency creators can)")
	flag.IntVar(&c.concurrency, "concurrency", 16, "concurrent creators of a 'max' run")
	flag.IntVar(&c.maxInFlight, "max-in-flight", 1000, "at a fixed rate, at most this many creates outstanding (the rate is not kept beyond it)")
	flag.DurationVar(&c.settle, "settle", 60*time.Second, "after the last create, wait at most this long for every Pod to be Running")
	flag.DurationVar(&c.pause, "pause", 5*time.Second, "pause after cleaning up a run, before the next")
	flag.StringVar(&c.outDir, "out-dir", ".", "directory for <backend>.json and <backend>-<run>.csv")
	flag.StringVar(&c.nodeLabel, "node-selector", "type=kwok", "nodeSelector key=value of the Pods (kwok's Nodes)")
	flag.Float64Var(&c.qps, "client-qps", 5000, "client-side QPS limit of this tool (and burst); high enough not to limit it")
	flag.StringVar(&cpu, "cpu", "", "comma-separated name=pid: account each run's CPU time of these processes (same name: added up)")
	flag.Parse()
	if c.kubeconfig == "" {
		return c, fmt.Errorf("--kubeconfig is required (or KUBECONFIG)")
	}
	if c.pods <= 0 || c.concurrency <= 0 || c.maxInFlight <= 0 {
		return c, fmt.Errorf("--pods, --concurrency and --max-in-flight must be > 0")
	}
	if !strings.Contains(c.nodeLabel, "=") {
		return c, fmt.Errorf("--node-selector must be key=value, got %q", c.nodeLabel)
	}
	var err error
	if c.processes, err = parseProcesses(cpu); err != nil {
		return c, err
	}
	c.processes = append(c.processes, process{name: "podstart", pid: os.Getpid()})
	c.runs, err = parseRuns(runs)
	return c, err
}

func main() {
	c, err := parseFlags()
	if err != nil {
		fmt.Fprintln(os.Stderr, "podstart:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, c); err != nil {
		fmt.Fprintln(os.Stderr, "podstart:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, c config) error {
	rc, err := clientcmd.BuildConfigFromFlags("", c.kubeconfig)
	if err != nil {
		return fmt.Errorf("reading kubeconfig %s: %w", c.kubeconfig, err)
	}
	rc.QPS = float32(c.qps)
	rc.Burst = int(c.qps)
	rc.ContentType = "application/vnd.kubernetes.protobuf"
	rc.UserAgent = "podstart"
	cs, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(c.outDir, 0o755); err != nil {
		return err
	}
	if err := prepareNamespace(ctx, cs, c.namespace); err != nil {
		return err
	}
	if err := cleanup(ctx, cs, c.namespace, selectorAll); err != nil {
		return fmt.Errorf("removing Pods of an earlier run: %w", err)
	}
	res := results{Backend: c.backend, Started: time.Now().UTC(), Pods: c.pods, Concurrency: c.concurrency}
	for i, spec := range c.runs {
		if i > 0 {
			sleepCtx(ctx, c.pause)
		}
		fmt.Fprintf(os.Stderr, "podstart: %s: run %s: %d Pods\n", c.backend, spec.name, c.pods)
		before := sampleCPU(c.processes)
		times, err := measure(ctx, cs, c, spec)
		if err != nil {
			return fmt.Errorf("run %s: %w", spec.name, err)
		}
		sum := summarize(spec, c, times)
		sum.CPU = usageBetween(before, sampleCPU(c.processes))
		res.Runs = append(res.Runs, sum)
		fmt.Println(sum.line(c.backend))
		if err := writeCSV(c.outDir, c.backend, spec.name, times); err != nil {
			return err
		}
		if err := cleanup(ctx, cs, c.namespace, selectorAll); err != nil {
			return fmt.Errorf("cleaning up after run %s: %w", spec.name, err)
		}
	}
	return writeJSON(c.outDir, res)
}

func sleepCtx(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}
