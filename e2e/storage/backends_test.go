package storage_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/kubernetes"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"

	"k8s.io/apiserver/pkg/storage/etcd3/testserver"
	storagetesting "k8s.io/apiserver/pkg/storage/testing"
)

// progressNotifyInterval is what kube-apiserver's own watch tests give etcd
// (--experimental-watch-progress-notify-interval) so that a quiet watch
// receives a progress notification within the test's patience.
const progressNotifyInterval = time.Second

// backend is one etcd API endpoint the suite runs against: a plain etcd
// (the oracle) or the ste-router in front of shards.
type backend struct {
	name string
	// start brings up a fresh, empty backend for one test case and returns
	// a client to it; everything it started is stopped by t.Cleanup.
	start func(t *testing.T) *kubernetes.Client
}

var backends = []backend{
	{name: "etcd", start: startPlainEtcd},
	{name: "router", start: startRouter},
}

// embedConfig is the configuration of one in-process etcd 3 server on free
// loopback ports with a temporary data dir and fsync off (as the STE agent
// runs its shards).
func embedConfig(t *testing.T) *embed.Config {
	cfg := testserver.NewTestConfig(t)
	cfg.UnsafeNoFsync = true
	cfg.WatchProgressNotifyInterval = progressNotifyInterval
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop())
	return cfg
}

// startEtcd starts one single-member etcd server, empty, and returns its
// client URL: an etcd binary when STE_ETCD_BIN names one (e.g. etcd 3.6,
// built by scripts/build-counterparts.sh), else etcd's server code in this process.
func startEtcd(t *testing.T) string {
	t.Helper()
	if bin := os.Getenv("STE_ETCD_BIN"); bin != "" {
		return startEtcdProcess(t, bin)
	}
	return startEmbedded(t)
}

// startEmbedded starts one etcd server in this process and returns its
// client URL.
func startEmbedded(t *testing.T) string {
	t.Helper()
	var lastErr error
	// Free ports are picked before the server binds them; another process
	// can take one in between, so a start that fails to bind is retried.
	for attempt := 0; attempt < 5; attempt++ {
		cfg := embedConfig(t)
		e, err := embed.StartEtcd(cfg)
		if err != nil {
			lastErr = err
			continue
		}
		select {
		case <-e.Server.ReadyNotify():
		case <-time.After(60 * time.Second):
			e.Close()
			t.Fatal("embedded etcd did not become ready within 60s")
		}
		t.Cleanup(e.Close)
		return cfg.AdvertiseClientUrls[0].String()
	}
	t.Fatalf("starting embedded etcd: %v", lastErr)
	return ""
}

// newClient returns the kind of client kube-apiserver uses, wrapped with the
// upstream recorders that some cases count calls with.
func newClient(t *testing.T, endpoint string) *kubernetes.Client {
	t.Helper()
	client, err := kubernetes.New(clientv3.Config{
		Endpoints:   []string{endpoint},
		DialTimeout: 10 * time.Second,
		Logger:      zap.NewNop(),
	})
	if err != nil {
		t.Fatalf("etcd client for %s: %v", endpoint, err)
	}
	t.Cleanup(func() { _ = client.Close() })
	lists := storagetesting.NewKubernetesRecorder(client.Kubernetes)
	client.KV = storagetesting.NewKVRecorder(client.KV, lists)
	client.Kubernetes = lists
	return client
}

// oracleVersion is the version the oracle etcd reports, for the summary.
var oracleVersion atomic.Value

func startPlainEtcd(t *testing.T) *kubernetes.Client {
	endpoint := startEtcd(t)
	client := newClient(t, endpoint)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if status, err := client.Status(ctx, endpoint); err == nil {
		oracleVersion.Store(status.Version)
	}
	return client
}

// routerBinary is the ste-router executable under test: $STE_ROUTER_BIN, or
// the workspace's debug build.
func routerBinary(t *testing.T) string {
	t.Helper()
	path := os.Getenv("STE_ROUTER_BIN")
	if path == "" {
		// go test runs in the package directory, e2e/storage.
		root, err := filepath.Abs(filepath.Join("..", ".."))
		if err != nil {
			t.Fatal(err)
		}
		path = filepath.Join(root, "target", "debug", "ste-router")
	}
	if info, err := os.Stat(path); err != nil || info.IsDir() {
		t.Fatalf("ste-router binary not found at %s: run `cargo build -p ste-router` in the repository root (or set STE_ROUTER_BIN)", path)
	}
	return path
}

func freeLoopbackAddr(t *testing.T) string {
	t.Helper()
	port, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("127.0.0.1:%d", port)
}

// startRouter starts three etcd shards and a ste-router process in front of
// them, waits until the router answers a Range, and returns a client to the
// router.
func startRouter(t *testing.T) *kubernetes.Client {
	t.Helper()
	bin := routerBinary(t)
	var members []string
	for _, name := range []string{"shard-a", "shard-b", "shard-c"} {
		members = append(members, "--member", name+"="+startEtcd(t))
	}
	return withFreshPorts(t, func() (*kubernetes.Client, error) {
		return tryStartRouter(t, bin, members)
	})
}

// errPortTaken marks a start that failed because a port picked free was
// taken before the process bound it.
var errPortTaken = errors.New("a port picked free was taken before the process bound it")

// withFreshPorts runs start, which picks free ports and starts a process on
// them, up to five times: a port is free when picked but the process binds
// it later, and another socket (an outgoing connection's local port, say)
// can take it in between. Any other failure ends the test at once.
func withFreshPorts[T any](t *testing.T, start func() (T, error)) T {
	t.Helper()
	for attempt := 1; ; attempt++ {
		started, err := start()
		if err == nil {
			return started
		}
		if !errors.Is(err, errPortTaken) || attempt == 5 {
			t.Fatal(err)
		}
		t.Logf("attempt %d: %v; retrying on other ports", attempt, err)
	}
}

// exitError is the error for a process that exited before serving, marked
// errPortTaken when its log says a port was in use.
func exitError(what string, waitErr error, log string) error {
	if strings.Contains(log, "address already in use") || strings.Contains(log, "is already in use") {
		return fmt.Errorf("%s exited before serving (%v): %w:\n%s", what, waitErr, errPortTaken, tail(log, 4000))
	}
	return fmt.Errorf("%s exited before serving (%v):\n%s", what, waitErr, tail(log, 4000))
}

// tryStartRouter is one attempt of startRouter on freshly picked ports.
func tryStartRouter(t *testing.T, bin string, members []string) (*kubernetes.Client, error) {
	t.Helper()
	dir := t.TempDir()
	listen := freeLoopbackAddr(t)
	args := []string{
		"--listen", listen,
		"--admin-listen", freeLoopbackAddr(t),
		"--user-listen", freeLoopbackAddr(t),
		// The suite tests the etcd API; nothing calls the admin ports.
		"--insecure",
		"--metrics-listen", freeLoopbackAddr(t),
		"--state-file", filepath.Join(dir, "router.state"),
		"--health-interval", "200ms",
		// The same interval as the oracle's, for the progress cases.
		"--progress-notify-interval", progressNotifyInterval.String(),
	}
	args = append(args, routerExtraArgs...)
	args = append(args, members...)
	logPath := filepath.Join(dir, "router.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), "STE_LOG=warn")
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", bin, err)
	}
	// exited is closed once the process is reaped, waitErr set before.
	exited := make(chan struct{})
	var waitErr error
	go func() {
		waitErr = cmd.Wait()
		close(exited)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
		_ = logFile.Close()
		if t.Failed() {
			if log, err := os.ReadFile(logPath); err == nil && len(log) > 0 {
				t.Logf("router log (tail):\n%s", tail(string(log), 4000))
			}
		}
	})

	client := newClient(t, "http://"+listen)
	deadline := time.Now().Add(60 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_, err := client.Client.Get(ctx, "/ste-conformance/ready")
		cancel()
		if err == nil {
			break
		}
		select {
		case <-exited:
			log, _ := os.ReadFile(logPath)
			return nil, exitError("ste-router", waitErr, string(log))
		default:
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(logPath)
			return nil, fmt.Errorf("ste-router did not serve within 60s (last error: %v):\n%s", err, tail(string(log), 4000))
		}
		time.Sleep(50 * time.Millisecond)
	}
	// Some cases count the reads a list makes: the probe is not one.
	recorder := client.KV.(*storagetesting.KVRecorder)
	recorder.GetReadsAndReset()
	recorder.GetStreamReadsAndReset()
	return client, nil
}

// routerExtraArgs are added to every router's command line.
var routerExtraArgs = strings.Fields(os.Getenv("STE_ROUTER_ARGS"))

func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "..." + s[len(s)-n:]
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// startEtcdProcess runs the etcd binary bin as one single-member server
// on free loopback ports with a temporary data dir and fsync off, waits
// until it answers a Range, and returns its client URL.
func startEtcdProcess(t *testing.T, bin string) string {
	t.Helper()
	if info, err := os.Stat(bin); err != nil || info.IsDir() {
		t.Fatalf("STE_ETCD_BIN=%s is not a file: build it with scripts/build-counterparts.sh etcd", bin)
	}
	return withFreshPorts(t, func() (string, error) { return tryStartEtcdProcess(t, bin) })
}

// tryStartEtcdProcess is one attempt of startEtcdProcess on freshly picked
// ports.
func tryStartEtcdProcess(t *testing.T, bin string) (string, error) {
	t.Helper()
	dir := t.TempDir()
	client := "http://" + freeLoopbackAddr(t)
	peer := "http://" + freeLoopbackAddr(t)
	logPath := filepath.Join(dir, "etcd.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin,
		"--name", "default",
		"--data-dir", filepath.Join(dir, "data"),
		"--listen-client-urls", client,
		"--advertise-client-urls", client,
		"--listen-peer-urls", peer,
		"--initial-advertise-peer-urls", peer,
		"--initial-cluster", "default="+peer,
		"--unsafe-no-fsync",
		"--watch-progress-notify-interval", progressNotifyInterval.String(),
		"--log-level", "warn",
	)
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	if err := cmd.Start(); err != nil {
		return "", fmt.Errorf("starting %s: %w", bin, err)
	}
	// exited is closed once the process is reaped, waitErr set before.
	exited := make(chan struct{})
	var waitErr error
	go func() {
		waitErr = cmd.Wait()
		close(exited)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
		_ = logFile.Close()
	})
	probe, err := clientv3.New(clientv3.Config{Endpoints: []string{client}, DialTimeout: 2 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		return "", err
	}
	defer probe.Close()
	deadline := time.Now().Add(60 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_, err := probe.Get(ctx, "/ste-conformance/ready")
		cancel()
		if err == nil {
			return client, nil
		}
		select {
		case <-exited:
			log, _ := os.ReadFile(logPath)
			return "", exitError(bin, waitErr, string(log))
		default:
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(logPath)
			return "", fmt.Errorf("%s did not serve within 60s (last error: %v):\n%s", bin, err, tail(string(log), 4000))
		}
		time.Sleep(50 * time.Millisecond)
	}
}
