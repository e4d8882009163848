package storage_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"go.etcd.io/etcd/client/v3/kubernetes"

	apiequality "k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/runtime/serializer/protobuf"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/apiserver/pkg/apis/example"
	examplev1 "k8s.io/apiserver/pkg/apis/example/v1"
	"k8s.io/apiserver/pkg/features"
	"k8s.io/apiserver/pkg/storage"
	"k8s.io/apiserver/pkg/storage/cacher"
	"k8s.io/apiserver/pkg/storage/etcd3"
	storagetesting "k8s.io/apiserver/pkg/storage/testing"
	"k8s.io/apiserver/pkg/storage/value/encrypt/identity"
	clientfeatures "k8s.io/client-go/features"
	"k8s.io/client-go/tools/cache"
	"k8s.io/component-base/featuregate"
	"k8s.io/utils/clock"
)

// cacherCodec is the codec kube-apiserver's watch cache tests store pods
// with: protobuf of the example group's v1.
func cacherCodec() runtime.Codec {
	pb := protobuf.NewSerializer(scheme, scheme)
	return codecs.CodecForVersions(pb, pb, schema.GroupVersions{examplev1.SchemeGroupVersion}, nil)
}

// podAttrs gives the labels and the selectable fields of a pod.
func podAttrs(obj runtime.Object) (labels.Set, fields.Set, error) {
	pod, ok := obj.(*example.Pod)
	if !ok {
		return nil, nil, fmt.Errorf("%T is not a pod", obj)
	}
	return labels.Set(pod.Labels), fields.Set{
		"metadata.name":      pod.Name,
		"metadata.namespace": pod.Namespace,
		"spec.nodeName":      pod.Spec.NodeName,
		"spec.restartPolicy": string(pod.Spec.RestartPolicy),
		"status.phase":       string(pod.Status.Phase),
	}, nil
}

type cacherOptions struct {
	clusterScoped bool
	// indexed adds the pods' node-name and namespace indexes, as
	// kube-apiserver's pod registry configures them.
	indexed bool
}

// newCacher builds the watch cache over the etcd3 store on one backend,
// waits until it has listed and watches, and returns the delegator
// kube-apiserver serves requests through.
func newCacher(t *testing.T, client *kubernetes.Client, opts cacherOptions) *cacher.CacheDelegator {
	t.Helper()
	codec := cacherCodec()
	versioner := storage.APIObjectVersioner{}
	compactor := etcd3.NewCompactor(client.Client, 0, clock.RealClock{}, nil)
	t.Cleanup(compactor.Stop)
	etcdStore, err := etcd3.New(
		client,
		compactor,
		codec,
		func() runtime.Object { return &example.Pod{} },
		func() runtime.Object { return &example.PodList{} },
		"",
		"/pods/",
		schema.GroupResource{Resource: "pods"},
		identity.NewEncryptCheckTransformer(),
		etcd3.NewDefaultLeaseManagerConfig(),
		etcd3.NewDefaultDecoder(codec, versioner),
		versioner,
	)
	if err != nil {
		t.Fatalf("etcd3.New: %v", err)
	}
	t.Cleanup(etcdStore.Close)

	// One failing list first, so that the cache's relist path runs too
	// (unless the reflector watches instead of listing).
	listErrors := 1
	if clientfeatures.FeatureGates().Enabled(clientfeatures.WatchListClient) {
		listErrors = 0
	}
	flaky := &storagetesting.StorageInjectingListErrors{Interface: etcdStore, Errors: listErrors}

	keyFunc := func(obj runtime.Object) (string, error) { return storage.NamespaceKeyFunc("/pods/", obj) }
	if opts.clusterScoped {
		keyFunc = func(obj runtime.Object) (string, error) { return storage.NoNamespaceKeyFunc("/pods/", obj) }
	}
	config := cacher.Config{
		Storage:             flaky,
		Versioner:           versioner,
		GroupResource:       schema.GroupResource{Resource: "pods"},
		EventsHistoryWindow: cacher.DefaultEventFreshDuration,
		ResourcePrefix:      "/pods/",
		KeyFunc:             keyFunc,
		GetAttrsFunc:        podAttrs,
		NewFunc:             func() runtime.Object { return &example.Pod{} },
		NewListFunc:         func() runtime.Object { return &example.PodList{} },
		Codec:               codec,
		Clock:               clock.RealClock{},
	}
	if opts.indexed {
		config.IndexerFuncs = map[string]storage.IndexerFunc{
			"spec.nodeName": func(obj runtime.Object) string {
				if pod, ok := obj.(*example.Pod); ok {
					return pod.Spec.NodeName
				}
				return ""
			},
		}
		config.Indexers = &cache.Indexers{
			"f:spec.nodeName": func(obj interface{}) ([]string, error) {
				return []string{obj.(*example.Pod).Spec.NodeName}, nil
			},
			"f:metadata.namespace": func(obj interface{}) ([]string, error) {
				return []string{obj.(*example.Pod).Namespace}, nil
			},
		}
	}
	c, err := cacher.NewCacherFromConfig(config)
	if err != nil {
		t.Fatalf("NewCacherFromConfig: %v", err)
	}
	delegator := cacher.NewCacheDelegator(c, flaky)
	t.Cleanup(func() {
		delegator.Stop()
		c.Stop()
	})

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	// The cases expect reads not to fail: wait until the injected list
	// error is spent and the cache is initialised.
	err = wait.PollUntilContextCancel(ctx, 100*time.Millisecond, true, func(context.Context) (bool, error) {
		return flaky.ErrorsConsumed()
	})
	if err != nil {
		t.Fatalf("the watch cache did not relist within 60s: %v", err)
	}
	if err := c.Wait(ctx); err != nil {
		t.Fatalf("the watch cache did not become ready: %v", err)
	}
	return delegator
}

// cacheSyncedCreate is a store whose Create returns only once the watch
// cache serves what was created, as the watch-semantics cases assume.
type cacheSyncedCreate struct {
	*cacher.CacheDelegator
}

func (c cacheSyncedCreate) Create(ctx context.Context, key string, obj, out runtime.Object, ttl uint64) error {
	if err := c.CacheDelegator.Create(ctx, key, obj, out, ttl); err != nil {
		return err
	}
	return wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, wait.ForeverTestTimeout, true, func(ctx context.Context) (bool, error) {
		current := &example.Pod{}
		err := c.CacheDelegator.Get(ctx, key, storage.GetOptions{ResourceVersion: "0"}, current)
		if storage.IsNotFound(err) {
			return false, nil
		}
		if err != nil {
			return false, err
		}
		return apiequality.Semantic.DeepEqual(current, out), nil
	})
}

// cacherCases are the upstream cases over the watch cache on top of the
// etcd3 store, wired as k8s.io/apiserver/pkg/storage/cacher's own tests
// wire them; those that need the cacher's unexported state are skipped.
func cacherCases() []suiteCase {
	bg := context.Background
	with := func(opts cacherOptions, run func(t *testing.T, c *cacher.CacheDelegator, client *kubernetes.Client)) func(*testing.T, *kubernetes.Client) {
		return func(t *testing.T, client *kubernetes.Client) {
			run(t, newCacher(t, client, opts), client)
		}
	}
	plain := func(run func(t *testing.T, c *cacher.CacheDelegator)) func(*testing.T, *kubernetes.Client) {
		return with(cacherOptions{}, func(t *testing.T, c *cacher.CacheDelegator, _ *kubernetes.Client) { run(t, c) })
	}
	noCheck := func(context.Context, *testing.T, string) {}
	noCalls := func(*testing.T, uint64, uint64) {}
	snapshot := func(on bool) map[featuregate.Feature]bool {
		return map[featuregate.Feature]bool{features.ListFromCacheSnapshot: on}
	}
	const internals = "needs the cacher's unexported state (its compactor and watch cache history)"

	cases := []suiteCase{
		{name: "Create", run: plain(func(t *testing.T, c *cacher.CacheDelegator) { storagetesting.RunTestCreate(bg(), t, c, noCheck) })},
		{name: "CreateWithTTL", run: plain(func(t *testing.T, c *cacher.CacheDelegator) { storagetesting.RunTestCreateWithTTL(bg(), t, c) })},
		{name: "CreateWithKeyExist", run: plain(func(t *testing.T, c *cacher.CacheDelegator) { storagetesting.RunTestCreateWithKeyExist(bg(), t, c) })},
		{name: "Get", run: plain(func(t *testing.T, c *cacher.CacheDelegator) { storagetesting.RunTestGet(bg(), t, c) })},
		{name: "UnconditionalDelete", run: plain(func(t *testing.T, c *cacher.CacheDelegator) { storagetesting.RunTestUnconditionalDelete(bg(), t, c) })},
		{name: "ConditionalDelete", run: plain(func(t *testing.T, c *cacher.CacheDelegator) { storagetesting.RunTestConditionalDelete(bg(), t, c) })},
		{name: "DeleteWithSuggestion", run: plain(func(t *testing.T, c *cacher.CacheDelegator) { storagetesting.RunTestDeleteWithSuggestion(bg(), t, c) })},
		{name: "DeleteWithSuggestionAndConflict", run: plain(func(t *testing.T, c *cacher.CacheDelegator) {
			storagetesting.RunTestDeleteWithSuggestionAndConflict(bg(), t, c)
		})},
		{name: "DeleteWithSuggestionOfDeletedObject", run: plain(func(t *testing.T, c *cacher.CacheDelegator) {
			storagetesting.RunTestDeleteWithSuggestionOfDeletedObject(bg(), t, c)
		})},
		{name: "ValidateDeletionWithSuggestion", run: plain(func(t *testing.T, c *cacher.CacheDelegator) {
			storagetesting.RunTestValidateDeletionWithSuggestion(bg(), t, c)
		})},
		{name: "ValidateDeletionWithOnlySuggestionValid", run: plain(func(t *testing.T, c *cacher.CacheDelegator) {
			storagetesting.RunTestValidateDeletionWithOnlySuggestionValid(bg(), t, c)
		})},
		{name: "DeleteWithConflict", run: plain(func(t *testing.T, c *cacher.CacheDelegator) { storagetesting.RunTestDeleteWithConflict(bg(), t, c) })},
		{name: "PreconditionalDeleteWithSuggestion", run: plain(func(t *testing.T, c *cacher.CacheDelegator) {
			storagetesting.RunTestPreconditionalDeleteWithSuggestion(bg(), t, c)
		})},
		{name: "PreconditionalDeleteWithSuggestionPass", run: plain(func(t *testing.T, c *cacher.CacheDelegator) {
			storagetesting.RunTestPreconditionalDeleteWithOnlySuggestionPass(bg(), t, c)
		})},
		{name: "ListPaging", run: plain(func(t *testing.T, c *cacher.CacheDelegator) { storagetesting.RunTestListPaging(bg(), t, c) })},
		{name: "Lists/ListFromCacheSnapshot=true/List", skip: bothBackends(internals)},
		{name: "Lists/ListFromCacheSnapshot=false/List", skip: bothBackends(internals)},
	}
	for _, on := range []bool{true, false} {
		prefix := fmt.Sprintf("Lists/ListFromCacheSnapshot=%v/", on)
		cases = append(cases,
			suiteCase{name: prefix + "ConsistentList", gates: snapshot(on),
				run: with(cacherOptions{}, func(t *testing.T, c *cacher.CacheDelegator, client *kubernetes.Client) {
					storagetesting.RunTestConsistentList(bg(), t, c, increaseRV(client.Client), true, true, on)
				})},
			suiteCase{name: prefix + "GetListNonRecursive", gates: snapshot(on),
				run: with(cacherOptions{}, func(t *testing.T, c *cacher.CacheDelegator, client *kubernetes.Client) {
					storagetesting.RunTestGetListNonRecursive(bg(), t, increaseRV(client.Client), c)
				})},
		)
	}
	cases = append(cases, []suiteCase{
		{name: "CompactRevision", skip: bothBackends(internals)},
		{name: "MarkConsistent", gates: snapshot(true), run: plain(func(t *testing.T, c *cacher.CacheDelegator) {
			storagetesting.RunTestListContinuationWithFilter(bg(), t, c, noCalls)
		})},
		{name: "GetListRecursivePrefix", run: plain(func(t *testing.T, c *cacher.CacheDelegator) { storagetesting.RunTestGetListRecursivePrefix(bg(), t, c) })},
		{name: "ListContinuation", run: plain(func(t *testing.T, c *cacher.CacheDelegator) {
			storagetesting.RunTestListContinuation(bg(), t, c, noCalls)
		})},
		{name: "ListPaginationRareObject", run: plain(func(t *testing.T, c *cacher.CacheDelegator) {
			storagetesting.RunTestListPaginationRareObject(bg(), t, c, noCalls)
		})},
		{name: "ListContinuationWithFilter", run: plain(func(t *testing.T, c *cacher.CacheDelegator) {
			storagetesting.RunTestListContinuationWithFilter(bg(), t, c, noCalls)
		})},
		{name: "NamespaceScopedList", run: with(cacherOptions{indexed: true}, func(t *testing.T, c *cacher.CacheDelegator, _ *kubernetes.Client) {
			storagetesting.RunTestNamespaceScopedList(bg(), t, c)
		})},
		{name: "GuaranteedUpdateWithTTL", run: plain(func(t *testing.T, c *cacher.CacheDelegator) {
			storagetesting.RunTestGuaranteedUpdateWithTTL(bg(), t, c)
		})},
		{name: "GuaranteedUpdateWithConflict", run: plain(func(t *testing.T, c *cacher.CacheDelegator) {
			storagetesting.RunTestGuaranteedUpdateWithConflict(bg(), t, c)
		})},
		{name: "GuaranteedUpdateWithSuggestionAndConflict", run: plain(func(t *testing.T, c *cacher.CacheDelegator) {
			storagetesting.RunTestGuaranteedUpdateWithSuggestionAndConflict(bg(), t, c)
		})},
		{name: "KeySchema", run: plain(func(t *testing.T, c *cacher.CacheDelegator) { storagetesting.RunTestKeySchema(bg(), t, c) })},
		{name: "Stats/SizeBasedListCostEstimate=true", gates: map[featuregate.Feature]bool{features.SizeBasedListCostEstimate: true},
			run: plain(func(t *testing.T, c *cacher.CacheDelegator) {
				storagetesting.RunTestStats(bg(), t, c, cacherCodec(), identity.NewEncryptCheckTransformer(), true)
			})},
		{name: "Stats/SizeBasedListCostEstimate=false", gates: map[featuregate.Feature]bool{features.SizeBasedListCostEstimate: false},
			run: plain(func(t *testing.T, c *cacher.CacheDelegator) {
				storagetesting.RunTestStats(bg(), t, c, cacherCodec(), identity.NewEncryptCheckTransformer(), false)
			})},
		{name: "Watch/Watch", run: plain(func(t *testing.T, c *cacher.CacheDelegator) { storagetesting.RunTestWatch(bg(), t, c) })},
		{name: "Watch/WatchFromZero", skip: bothBackends(internals)},
		{name: "Watch/DeleteTriggerWatch", run: plain(func(t *testing.T, c *cacher.CacheDelegator) { storagetesting.RunTestDeleteTriggerWatch(bg(), t, c) })},
		{name: "Watch/WatchFromNonZero", run: plain(func(t *testing.T, c *cacher.CacheDelegator) { storagetesting.RunTestWatchFromNonZero(bg(), t, c) })},
		{name: "Watch/DelayedWatchDelivery", run: plain(func(t *testing.T, c *cacher.CacheDelegator) { storagetesting.RunTestDelayedWatchDelivery(bg(), t, c) })},
		{name: "Watch/WatcherTimeout", run: plain(func(t *testing.T, c *cacher.CacheDelegator) { storagetesting.RunTestWatcherTimeout(bg(), t, c) })},
		{name: "Watch/WatchDeleteEventObjectHaveLatestRV", run: plain(func(t *testing.T, c *cacher.CacheDelegator) {
			storagetesting.RunTestWatchDeleteEventObjectHaveLatestRV(bg(), t, c)
		})},
		{name: "Watch/WatchInitializationSignal", run: plain(func(t *testing.T, c *cacher.CacheDelegator) {
			storagetesting.RunTestWatchInitializationSignal(bg(), t, c)
		})},
		{name: "Watch/ClusterScopedWatch", run: with(cacherOptions{clusterScoped: true, indexed: true}, func(t *testing.T, c *cacher.CacheDelegator, _ *kubernetes.Client) {
			storagetesting.RunTestClusterScopedWatch(bg(), t, c)
		})},
		{name: "Watch/NamespaceScopedWatch", run: with(cacherOptions{indexed: true}, func(t *testing.T, c *cacher.CacheDelegator, _ *kubernetes.Client) {
			storagetesting.RunTestNamespaceScopedWatch(bg(), t, c)
		})},
		{name: "Watch/WatchDispatchBookmarkEvents", run: plain(func(t *testing.T, c *cacher.CacheDelegator) {
			storagetesting.RunTestWatchDispatchBookmarkEvents(bg(), t, c, true)
		})},
		{name: "Watch/WatchBookmarksWithCorrectResourceVersion", run: plain(func(t *testing.T, c *cacher.CacheDelegator) {
			storagetesting.RunTestOptionalWatchBookmarksWithCorrectResourceVersion(bg(), t, c)
		})},
		{name: "Watch/SendInitialEventsBackwardCompatibility", run: plain(func(t *testing.T, c *cacher.CacheDelegator) {
			storagetesting.RunSendInitialEventsBackwardCompatibility(bg(), t, c)
		})},
		{name: "Watch/WatchSemantics", run: plain(func(t *testing.T, c *cacher.CacheDelegator) {
			storagetesting.RunWatchSemantics(bg(), t, cacheSyncedCreate{c})
		})},
		{name: "Watch/WatchSemanticInitialEventsExtended", run: plain(func(t *testing.T, c *cacher.CacheDelegator) {
			storagetesting.RunWatchSemanticInitialEventsExtended(bg(), t, cacheSyncedCreate{c})
		})},
		{name: "Watch/WatchListMatchSingle", run: plain(func(t *testing.T, c *cacher.CacheDelegator) {
			storagetesting.RunWatchListMatchSingle(bg(), t, cacheSyncedCreate{c})
		})},
	}...)
	for i := range cases {
		cases[i].name = "cacher/" + cases[i].name
	}
	return cases
}
