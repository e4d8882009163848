package main

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	watchtools "k8s.io/client-go/tools/watch"
)

// Labels of every Pod this tool creates: app selects all of them (for
// cleanup), run the Pods of one run (for its watch).
const (
	labelApp    = "app.kubernetes.io/name"
	appName     = "podstart"
	labelRun    = "podstart.ste.io/run"
	selectorAll = labelApp + "=" + appName
)

// podTimes is what one run learns about one Pod. The client-side times
// (Sent, Acked, Scheduled, Running) are time.Time values with a monotonic
// reading, so their differences are exact; zero means "never seen".
type podTimes struct {
	Name      string
	Sent      time.Time // just before the create request was sent
	Acked     time.Time // the create returned
	CreateErr string
	Scheduled time.Time // the watch delivered the first event with spec.nodeName set
	Running   time.Time // the watch delivered the first event with status.phase=Running
	Node      string
	// The Pod's own timestamps, one-second resolution: creationTimestamp,
	// PodScheduled's and Ready's lastTransitionTime.
	Created, CondScheduled, CondReady time.Time
}

// tracker records what the watch delivers, per Pod name. The watch can
// deliver a Pod before its create returns, so it keeps its own map.
type tracker struct {
	mu      sync.Mutex
	pods    map[string]*podTimes
	running atomic.Int64
}

func (t *tracker) observe(now time.Time, pod *corev1.Pod) {
	t.mu.Lock()
	defer t.mu.Unlock()
	p := t.pods[pod.Name]
	if p == nil {
		p = &podTimes{Name: pod.Name}
		t.pods[pod.Name] = p
	}
	p.Created = pod.CreationTimestamp.Time
	if pod.Spec.NodeName != "" && p.Scheduled.IsZero() {
		p.Scheduled = now
		p.Node = pod.Spec.NodeName
	}
	for _, c := range pod.Status.Conditions {
		if c.Status != corev1.ConditionTrue {
			continue
		}
		switch c.Type {
		case corev1.PodScheduled:
			p.CondScheduled = c.LastTransitionTime.Time
		case corev1.PodReady:
			p.CondReady = c.LastTransitionTime.Time
		}
	}
	if pod.Status.Phase == corev1.PodRunning && p.Running.IsZero() {
		p.Running = now
		t.running.Add(1)
	}
}

// podWatcher starts watches of one run's Pods for RetryWatcher, which
// resumes from the last resource version if the server closes the watch.
type podWatcher struct {
	cs        kubernetes.Interface
	namespace string
	selector  string
}

func (w podWatcher) WatchWithContext(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
	o.LabelSelector = w.selector
	return w.cs.CoreV1().Pods(w.namespace).Watch(ctx, o)
}

// measure runs one run: starts the watch, creates c.pods Pods as spec
// says, and waits until all created Pods are Running (or c.settle has
// passed since the last create).
func measure(ctx context.Context, cs kubernetes.Interface, c config, spec runSpec) ([]*podTimes, error) {
	runID := fmt.Sprintf("%s-%d", spec.name, time.Now().Unix())
	selector := selectorAll + "," + labelRun + "=" + runID
	list, err := cs.CoreV1().Pods(c.namespace).List(ctx, metav1.ListOptions{LabelSelector: selector})
	if err != nil {
		return nil, fmt.Errorf("listing Pods to start the watch: %w", err)
	}
	wctx, cancelWatch := context.WithCancel(ctx)
	defer cancelWatch()
	rw, err := watchtools.NewRetryWatcherWithContext(wctx, list.ResourceVersion,
		podWatcher{cs: cs, namespace: c.namespace, selector: selector})
	if err != nil {
		return nil, fmt.Errorf("starting the watch: %w", err)
	}
	defer rw.Stop()
	tr := &tracker{pods: make(map[string]*podTimes, c.pods)}
	watchDone := make(chan struct{})
	go func() {
		defer close(watchDone)
		for ev := range rw.ResultChan() {
			now := time.Now()
			if pod, ok := ev.Object.(*corev1.Pod); ok && (ev.Type == watch.Added || ev.Type == watch.Modified) {
				tr.observe(now, pod)
			}
		}
	}()

	creates := make([]podTimes, c.pods)
	key, value, _ := strings.Cut(c.nodeLabel, "=")
	create := func(i int) {
		name := fmt.Sprintf("podstart-%s-%05d", runID, i)
		pod := newPod(name, runID, key, value)
		p := &creates[i]
		p.Name = name
		p.Sent = time.Now()
		_, err := cs.CoreV1().Pods(c.namespace).Create(ctx, pod, metav1.CreateOptions{})
		p.Acked = time.Now()
		if err != nil {
			p.CreateErr = err.Error()
		}
	}
	if spec.rate > 0 {
		createAtRate(ctx, c.pods, spec.rate, c.maxInFlight, create)
	} else {
		createConcurrently(c.pods, c.concurrency, create)
	}
	created, firstErr := 0, ""
	for i := range creates {
		if creates[i].CreateErr == "" {
			created++
		} else if firstErr == "" {
			firstErr = creates[i].CreateErr
		}
	}
	if firstErr != "" {
		fmt.Fprintf(os.Stderr, "podstart: %d of %d creates failed; the first: %s\n", c.pods-created, c.pods, firstErr)
	}
	deadline := time.Now().Add(c.settle)
	for tr.running.Load() < int64(created) && time.Now().Before(deadline) && ctx.Err() == nil {
		time.Sleep(20 * time.Millisecond)
	}
	cancelWatch()
	rw.Stop()
	<-watchDone

	tr.mu.Lock()
	defer tr.mu.Unlock()
	out := make([]*podTimes, c.pods)
	for i := range creates {
		p := creates[i]
		if w := tr.pods[p.Name]; w != nil {
			p.Scheduled, p.Running, p.Node = w.Scheduled, w.Running, w.Node
			p.Created, p.CondScheduled, p.CondReady = w.Created, w.CondScheduled, w.CondReady
		}
		out[i] = &p
	}
	return out, ctx.Err()
}

// createAtRate calls create(0..n-1) at a fixed rate, open loop: each
// create starts at its scheduled time whether or not earlier ones have
// returned (as Pods arrive in a real cluster), with at most maxInFlight
// outstanding.
func createAtRate(ctx context.Context, n int, rate float64, maxInFlight int, create func(int)) {
	interval := time.Duration(float64(time.Second) / rate)
	slots := make(chan struct{}, maxInFlight)
	var wg sync.WaitGroup
	start := time.Now()
	for i := 0; i < n && ctx.Err() == nil; i++ {
		if d := time.Until(start.Add(time.Duration(i) * interval)); d > 0 {
			time.Sleep(d)
		}
		slots <- struct{}{}
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			defer func() { <-slots }()
			create(i)
		}(i)
	}
	wg.Wait()
}

// createConcurrently calls create(0..n-1) from `workers` goroutines, each
// starting its next create as soon as its last one returned.
func createConcurrently(n, workers int, create func(int)) {
	var next atomic.Int64
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				create(i)
			}
		}()
	}
	wg.Wait()
}

// newPod is the Pod a run creates: one container that kwok never runs,
// bound to kwok's Nodes by the node selector and tolerating kwok's taint.
func newPod(name, runID, nodeKey, nodeValue string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Name:   name,
			Labels: map[string]string{labelApp: appName, labelRun: runID},
		},
		Spec: corev1.PodSpec{
			Containers: []corev1.Container{{
				Name:  "pause",
				Image: "registry.k8s.io/pause:3.10",
			}},
			NodeSelector:                 map[string]string{nodeKey: nodeValue},
			AutomountServiceAccountToken: new(false),
			Tolerations: []corev1.Toleration{{
				Key:      "kwok.x-k8s.io/node",
				Operator: corev1.TolerationOpExists,
				Effect:   corev1.TaintEffectNoSchedule,
			}},
		},
	}
}
