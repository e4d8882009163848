package storage_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/kubernetes"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/apiserver/pkg/apis/example"
	examplev1 "k8s.io/apiserver/pkg/apis/example/v1"
	"k8s.io/apiserver/pkg/features"
	"k8s.io/apiserver/pkg/storage"
	"k8s.io/apiserver/pkg/storage/etcd3"
	storagetesting "k8s.io/apiserver/pkg/storage/testing"
	"k8s.io/apiserver/pkg/storage/value"
	utilfeature "k8s.io/apiserver/pkg/util/feature"
	"k8s.io/utils/clock"
)

var (
	scheme = runtime.NewScheme()
	codecs = serializer.NewCodecFactory(scheme)
)

func init() {
	metav1.AddToGroupVersion(scheme, metav1.SchemeGroupVersion)
	utilruntime.Must(example.AddToScheme(scheme))
	utilruntime.Must(examplev1.AddToScheme(scheme))
}

// valuePrefix marks every value the store writes, so a case can check that
// what comes back from the backend went through the transformer.
const valuePrefix = "test!"

// listPageCap is the largest page the etcd3 store asks for when it grows its
// page size (its unexported maxLimit); the paging call-count check needs it.
const listPageCap = 10000

// swappableTransformer lets a case replace the transformer of a running
// store: the store and its watcher both hold this one value, and the
// replacement lives behind it.
type swappableTransformer struct {
	base *storagetesting.PrefixTransformer

	mu      sync.RWMutex
	current value.Transformer
}

func newSwappableTransformer() *swappableTransformer {
	base := storagetesting.NewPrefixTransformer([]byte(valuePrefix), false)
	return &swappableTransformer{base: base, current: base}
}

func (s *swappableTransformer) get() value.Transformer {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.current
}

func (s *swappableTransformer) set(t value.Transformer) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.current = t
}

func (s *swappableTransformer) TransformFromStorage(ctx context.Context, data []byte, dataCtx value.Context) ([]byte, bool, error) {
	return s.get().TransformFromStorage(ctx, data, dataCtx)
}

func (s *swappableTransformer) TransformToStorage(ctx context.Context, data []byte, dataCtx value.Context) ([]byte, error) {
	return s.get().TransformToStorage(ctx, data, dataCtx)
}

// failingTransformer fails every read while its switch is on.
type failingTransformer struct {
	value.Transformer
	fail atomic.Bool
}

func (f *failingTransformer) TransformFromStorage(ctx context.Context, data []byte, dataCtx value.Context) ([]byte, bool, error) {
	if f.fail.Load() {
		return nil, false, errors.New("synthetic transform error")
	}
	return f.Transformer.TransformFromStorage(ctx, data, dataCtx)
}

// failingCodec fails every decode while its switch is on.
type failingCodec struct {
	runtime.Codec
	fail atomic.Bool
}

func (f *failingCodec) Decode(data []byte, defaults *schema.GroupVersionKind, into runtime.Object) (runtime.Object, *schema.GroupVersionKind, error) {
	if f.fail.Load() {
		return nil, nil, errors.New("synthetic decode error")
	}
	return f.Codec.Decode(data, defaults, into)
}

// testStore is kube-apiserver's etcd3 store over one backend, with the
// hooks the upstream cases ask for.
type testStore struct {
	storage.Interface
	client      *kubernetes.Client
	codec       runtime.Codec
	transformer *swappableTransformer
	// extra wraps the swappable transformer when a case brings its own.
	extra value.Transformer
}

var _ storagetesting.InterfaceWithPrefixTransformer = (*testStore)(nil)
var _ storagetesting.InterfaceWithTransformerOverride = (*testStore)(nil)

func (s *testStore) UpdatePrefixTransformer(modifier storagetesting.PrefixTransformerModifier) func() {
	replica := *s.transformer.base
	s.transformer.set(modifier(&replica))
	return func() { s.transformer.set(s.transformer.base) }
}

func (s *testStore) UpdateTransformer(modifier storagetesting.TransformerModifier) func() {
	previous := s.transformer.get()
	s.transformer.set(modifier(previous))
	return func() { s.transformer.set(previous) }
}

type storeOption func(*testStore)

func withCodec(codec runtime.Codec) storeOption {
	return func(s *testStore) { s.codec = codec }
}

// withTransformerWrapper puts wrap(swappable) in front of the store.
func withTransformerWrapper(wrap func(value.Transformer) value.Transformer) storeOption {
	return func(s *testStore) { s.extra = wrap(s.transformer) }
}

// newStore builds the etcd3 store the way kube-apiserver does for a
// resource: pods of the example API group under "/pods/", no path prefix.
func newStore(t *testing.T, client *kubernetes.Client, opts ...storeOption) (context.Context, *testStore) {
	t.Helper()
	s := &testStore{
		client:      client,
		codec:       newStoreCodec(),
		transformer: newSwappableTransformer(),
	}
	for _, opt := range opts {
		opt(s)
	}
	var transformer value.Transformer = s.transformer
	if s.extra != nil {
		transformer = s.extra
	}
	leases := etcd3.NewDefaultLeaseManagerConfig()
	// Reuse a lease for at most a second, as upstream's tests do, so TTL
	// cases do not outlive the test's patience.
	leases.ReuseDurationSeconds = 1
	versioner := storage.APIObjectVersioner{}
	compactor := etcd3.NewCompactor(client.Client, 0, clock.RealClock{}, nil)
	t.Cleanup(compactor.Stop)
	store, err := etcd3.New(
		client,
		compactor,
		s.codec,
		func() runtime.Object { return &example.Pod{} },
		func() runtime.Object { return &example.PodList{} },
		"",
		"/pods/",
		schema.GroupResource{Resource: "pods"},
		transformer,
		leases,
		etcd3.NewDefaultDecoder(s.codec, versioner),
		versioner,
	)
	if err != nil {
		t.Fatalf("etcd3.New: %v", err)
	}
	t.Cleanup(store.Close)
	s.Interface = store
	return context.Background(), s
}

// keyValidation checks what the store left in the backend under key: a
// value behind the transformer's prefix that decodes to a pod with neither
// resourceVersion nor selfLink.
func (s *testStore) keyValidation() storagetesting.KeyValidation {
	return func(ctx context.Context, t *testing.T, key string) {
		resp, err := s.client.KV.Get(ctx, key)
		if err != nil {
			t.Fatalf("Get %s: %v", key, err)
		}
		if len(resp.Kvs) == 0 {
			t.Fatalf("no value stored under %s", key)
		}
		raw := resp.Kvs[0].Value
		if len(raw) < len(valuePrefix) || string(raw[:len(valuePrefix)]) != valuePrefix {
			t.Fatalf("stored value of %s lacks the transformer prefix: %q", key, raw)
		}
		decoded, err := runtime.Decode(s.codec, raw[len(valuePrefix):])
		if err != nil {
			t.Fatalf("decoding stored %s: %v", key, err)
		}
		pod := decoded.(*example.Pod)
		if pod.ResourceVersion != "" {
			t.Errorf("stored object has resourceVersion %q, want none", pod.ResourceVersion)
		}
		if pod.SelfLink != "" {
			t.Errorf("stored object has selfLink %q, want none", pod.SelfLink)
		}
	}
}

// callsValidation checks that a paged list decoded exactly the objects it
// had to and asked the backend as few times as the store's page growth
// allows.
func (s *testStore) callsValidation() storagetesting.CallsValidation {
	recorder := s.client.KV.(*storagetesting.KVRecorder)
	return func(t *testing.T, pageSize, processed uint64) {
		if reads := s.transformer.base.GetReadsAndReset(); reads != processed {
			t.Errorf("objects decoded: %d, want %d", reads, processed)
		}
		want := uint64(1)
		if pageSize != 0 {
			limit := pageSize
			for seen := uint64(1); seen < processed; {
				limit = min(limit*2, listPageCap)
				seen += limit
				want++
			}
		}
		if got := recorder.GetReadsAndReset() + recorder.GetStreamReadsAndReset(); got != want {
			t.Fatalf("backend reads: %d, want %d", got, want)
		}
	}
}

// compaction compacts the backend at a resourceVersion the way
// kube-apiserver's compactor does, then waits until the store has seen it.
func (s *testStore) compaction() storagetesting.Compaction {
	return func(ctx context.Context, t *testing.T, resourceVersion string) {
		rv, err := storage.APIObjectVersioner{}.ParseResourceVersion(resourceVersion)
		if err != nil {
			t.Fatal(err)
		}
		version, _, _, err := etcd3.Compact(ctx, s.client.Client, 0, int64(rv))
		if err != nil {
			_, _, _, err = etcd3.Compact(ctx, s.client.Client, version, int64(rv))
		}
		if err != nil {
			t.Fatalf("compacting at %d: %v", rv, err)
		}
		if !utilfeature.DefaultFeatureGate.Enabled(features.ListFromCacheSnapshot) {
			return
		}
		compacted, ok := s.Interface.(interface{ CompactRevision() int64 })
		if !ok {
			return
		}
		deadline := time.Now().Add(30 * time.Second)
		for compacted.CompactRevision() != int64(rv) {
			if time.Now().After(deadline) {
				t.Fatalf("the store did not observe compaction at %d within 30s (sees %d)", rv, compacted.CompactRevision())
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
}

// increaseRV writes an unrelated key and returns the revision it got.
func increaseRV(client *clientv3.Client) storagetesting.IncreaseRVFunc {
	return func(ctx context.Context, t *testing.T) int64 {
		resp, err := client.KV.Put(ctx, "increaseRV", "ok")
		if err != nil {
			t.Fatalf("Put increaseRV: %v", err)
		}
		return resp.Header.Revision
	}
}

// keysFunc lists every key of the store's resource, for size estimates.
func (s *testStore) keysFunc() storage.KeysFunc {
	return func(ctx context.Context) ([]string, error) {
		resp, err := s.client.KV.Get(ctx, "/pods/", clientv3.WithPrefix(), clientv3.WithKeysOnly())
		if err != nil {
			return nil, err
		}
		keys := make([]string, 0, len(resp.Kvs))
		for _, kv := range resp.Kvs {
			keys = append(keys, string(kv.Key))
		}
		return keys, nil
	}
}
