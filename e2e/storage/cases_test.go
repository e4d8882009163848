package storage_test

import (
	"context"
	"testing"

	"go.etcd.io/etcd/client/v3/kubernetes"

	"k8s.io/apimachinery/pkg/api/apitesting"
	"k8s.io/apimachinery/pkg/runtime"
	examplev1 "k8s.io/apiserver/pkg/apis/example/v1"
	"k8s.io/apiserver/pkg/features"
	"k8s.io/apiserver/pkg/storage"
	storagetesting "k8s.io/apiserver/pkg/storage/testing"
	"k8s.io/apiserver/pkg/storage/value"
	"k8s.io/component-base/featuregate"
)

// suiteCase is one upstream storage test, run on a fresh backend.
type suiteCase struct {
	name string
	// gates are feature gates set for this case only.
	gates map[featuregate.Feature]bool
	// skip gives, per backend name, why the case is not run there.
	skip map[string]string
	run  func(t *testing.T, client *kubernetes.Client)
}

// notWired is the reason for cases that need kube-apiserver internals a
// test outside package etcd3 cannot build (its unexported corrupt-object
// error); they test the apiserver's error handling, not the backend.
const notWired = "needs etcd3's unexported corruptObjectError; exercises apiserver error handling, not the backend"

// storeCases are the upstream cases over the etcd3 store alone, wired as
// k8s.io/apiserver/pkg/storage/etcd3's own store and watcher tests wire them.
func storeCases() []suiteCase {
	unsafeDelete := map[featuregate.Feature]bool{features.AllowUnsafeMalformedObjectDeletion: true}
	plain := func(run func(t *testing.T, s *testStore)) func(*testing.T, *kubernetes.Client) {
		return func(t *testing.T, client *kubernetes.Client) {
			_, s := newStore(t, client)
			run(t, s)
		}
	}
	cases := []suiteCase{
		{name: "Create", run: plain(func(t *testing.T, s *testStore) {
			storagetesting.RunTestCreate(context.Background(), t, s, s.keyValidation())
		})},
		{name: "CreateWithTTL", run: plain(func(t *testing.T, s *testStore) {
			storagetesting.RunTestCreateWithTTL(context.Background(), t, s)
		})},
		{name: "CreateWithKeyExist", run: plain(func(t *testing.T, s *testStore) {
			storagetesting.RunTestCreateWithKeyExist(context.Background(), t, s)
		})},
		{name: "Get", run: plain(func(t *testing.T, s *testStore) {
			storagetesting.RunTestGet(context.Background(), t, s)
		})},
		{name: "UnconditionalDelete", run: plain(func(t *testing.T, s *testStore) {
			storagetesting.RunTestUnconditionalDelete(context.Background(), t, s)
		})},
		{name: "ConditionalDelete", run: plain(func(t *testing.T, s *testStore) {
			storagetesting.RunTestConditionalDelete(context.Background(), t, s)
		})},
		{name: "DeleteWithSuggestion", run: plain(func(t *testing.T, s *testStore) {
			storagetesting.RunTestDeleteWithSuggestion(context.Background(), t, s)
		})},
		{name: "DeleteWithSuggestionAndConflict", run: plain(func(t *testing.T, s *testStore) {
			storagetesting.RunTestDeleteWithSuggestionAndConflict(context.Background(), t, s)
		})},
		{name: "DeleteWithSuggestionOfDeletedObject", run: plain(func(t *testing.T, s *testStore) {
			storagetesting.RunTestDeleteWithSuggestionOfDeletedObject(context.Background(), t, s)
		})},
		{name: "ValidateDeletionWithSuggestion", run: plain(func(t *testing.T, s *testStore) {
			storagetesting.RunTestValidateDeletionWithSuggestion(context.Background(), t, s)
		})},
		{name: "ValidateDeletionWithOnlySuggestionValid", run: plain(func(t *testing.T, s *testStore) {
			storagetesting.RunTestValidateDeletionWithOnlySuggestionValid(context.Background(), t, s)
		})},
		{name: "DeleteWithConflict", run: plain(func(t *testing.T, s *testStore) {
			storagetesting.RunTestDeleteWithConflict(context.Background(), t, s)
		})},
		{name: "DeleteWithConflictAndMissingExpectedTransformOrDecodeError", gates: unsafeDelete,
			run: func(t *testing.T, client *kubernetes.Client) {
				codec := &failingCodec{Codec: newStoreCodec()}
				_, s := newStore(t, client, withCodec(codec))
				storagetesting.RunTestDeleteWithConflictAndMissingExpectedTransformOrDecodeError(context.Background(), t, s, codec.fail.Store)
			}},
		{name: "DeleteWithConflictAndExpectedTransformError", gates: unsafeDelete,
			run: func(t *testing.T, client *kubernetes.Client) {
				failing := &failingTransformer{}
				_, s := newStore(t, client, withTransformerWrapper(func(inner value.Transformer) value.Transformer {
					failing.Transformer = inner
					return failing
				}))
				storagetesting.RunTestDeleteExpectedTransformOrDecodeError(context.Background(), t, s, failing.fail.Store)
			}},
		{name: "DeleteWithConflictAndExpectedDecodeError", gates: unsafeDelete,
			run: func(t *testing.T, client *kubernetes.Client) {
				codec := &failingCodec{Codec: newStoreCodec()}
				_, s := newStore(t, client, withCodec(codec))
				storagetesting.RunTestDeleteExpectedTransformOrDecodeError(context.Background(), t, s, codec.fail.Store)
			}},
		{name: "DeleteWithSuggestionAndMissingExpectedTransformOrDecodeFailure", gates: unsafeDelete, run: plain(func(t *testing.T, s *testStore) {
			storagetesting.RunTestDeleteWithSuggestionAndMissingExpectedTransformOrDecodeError(context.Background(), t, s)
		})},
		{name: "PreconditionalDeleteWithSuggestion", run: plain(func(t *testing.T, s *testStore) {
			storagetesting.RunTestPreconditionalDeleteWithSuggestion(context.Background(), t, s)
		})},
		{name: "PreconditionalDeleteWithSuggestionPass", run: plain(func(t *testing.T, s *testStore) {
			storagetesting.RunTestPreconditionalDeleteWithOnlySuggestionPass(context.Background(), t, s)
		})},
		{name: "ListPaging", run: plain(func(t *testing.T, s *testStore) {
			storagetesting.RunTestListPaging(context.Background(), t, s)
		})},
		{name: "GetListNonRecursive", run: plain(func(t *testing.T, s *testStore) {
			storagetesting.RunTestGetListNonRecursive(context.Background(), t, increaseRV(s.client.Client), s)
		})},
		{name: "GetListRecursivePrefix", run: plain(func(t *testing.T, s *testStore) {
			storagetesting.RunTestGetListRecursivePrefix(context.Background(), t, s)
		})},
		{name: "KeySchema", run: plain(func(t *testing.T, s *testStore) {
			storagetesting.RunTestKeySchema(context.Background(), t, s)
		})},
		{name: "GetListWithErrorAggregation", skip: bothBackends(notWired)},
		{name: "GetListWithoutErrorAggregation", skip: bothBackends(notWired)},
		{name: "GuaranteedUpdate", run: plain(func(t *testing.T, s *testStore) {
			storagetesting.RunTestGuaranteedUpdate(context.Background(), t, s, s.keyValidation())
		})},
		{name: "GuaranteedUpdateWithTTL", run: plain(func(t *testing.T, s *testStore) {
			storagetesting.RunTestGuaranteedUpdateWithTTL(context.Background(), t, s)
		})},
		{name: "GuaranteedUpdateChecksStoredData", run: plain(func(t *testing.T, s *testStore) {
			storagetesting.RunTestGuaranteedUpdateChecksStoredData(context.Background(), t, s)
		})},
		{name: "GuaranteedUpdateWithConflict", run: plain(func(t *testing.T, s *testStore) {
			storagetesting.RunTestGuaranteedUpdateWithConflict(context.Background(), t, s)
		})},
		{name: "GuaranteedUpdateWithSuggestionAndConflict", run: plain(func(t *testing.T, s *testStore) {
			storagetesting.RunTestGuaranteedUpdateWithSuggestionAndConflict(context.Background(), t, s)
		})},
		{name: "TransformationFailure", run: plain(func(t *testing.T, s *testStore) {
			storagetesting.RunTestTransformationFailure(context.Background(), t, s)
		})},
		{name: "List", run: plain(func(t *testing.T, s *testStore) {
			recorder := s.client.Kubernetes.(*storagetesting.KubernetesRecorder)
			storagetesting.RunTestList(context.Background(), t, s, s.compaction(), false, recorder)
		})},
		{name: "ConsistentList", run: plain(func(t *testing.T, s *testStore) {
			storagetesting.RunTestConsistentList(context.Background(), t, s, increaseRV(s.client.Client), false, true, false)
		})},
		{name: "CompactRevision", gates: map[featuregate.Feature]bool{features.ListFromCacheSnapshot: true},
			run: plain(func(t *testing.T, s *testStore) {
				storagetesting.RunTestCompactRevision(context.Background(), t, s, increaseRV(s.client.Client), s.compaction())
			})},
		{name: "ListContinuation", run: plain(func(t *testing.T, s *testStore) {
			storagetesting.RunTestListContinuation(context.Background(), t, s, s.callsValidation())
		})},
		{name: "ListPaginationRareObject",
			// The extra read of the compact key that ListFromCacheSnapshot
			// adds would be counted as a list call (upstream turns it off too).
			gates: map[featuregate.Feature]bool{features.ListFromCacheSnapshot: false},
			run: plain(func(t *testing.T, s *testStore) {
				storagetesting.RunTestListPaginationRareObject(context.Background(), t, s, s.callsValidation())
			})},
		{name: "ListContinuationWithFilter", run: plain(func(t *testing.T, s *testStore) {
			storagetesting.RunTestListContinuationWithFilter(context.Background(), t, s, s.callsValidation())
		})},
		{name: "NamespaceScopedList", run: plain(func(t *testing.T, s *testStore) {
			storagetesting.RunTestNamespaceScopedList(context.Background(), t, s)
		})},
		{name: "ListInconsistentContinuation", run: plain(func(t *testing.T, s *testStore) {
			storagetesting.RunTestListInconsistentContinuation(context.Background(), t, s, s.compaction())
		})},
		{name: "ListResourceVersionMatch", run: plain(func(t *testing.T, s *testStore) {
			storagetesting.RunTestListResourceVersionMatch(context.Background(), t, s)
		})},
		{name: "Stats/SizeBasedListCostEstimate=true", run: plain(func(t *testing.T, s *testStore) {
			sized, ok := s.Interface.(interface {
				EnableResourceSizeEstimation(storage.KeysFunc) error
			})
			if !ok {
				t.Fatal("the etcd3 store has no EnableResourceSizeEstimation")
			}
			if err := sized.EnableResourceSizeEstimation(s.keysFunc()); err != nil {
				t.Fatal(err)
			}
			storagetesting.RunTestStats(context.Background(), t, s, s.codec, s.transformer, true)
		})},
		{name: "Stats/SizeBasedListCostEstimate=false", run: plain(func(t *testing.T, s *testStore) {
			storagetesting.RunTestStats(context.Background(), t, s, s.codec, s.transformer, false)
		})},
	}
	cases = append(cases, watchCases(plain)...)
	// kube-apiserver's default: lists stream with RangeStream where the
	// server has it, and fall back to paged Range where it does not.
	rangeStream := map[featuregate.Feature]bool{features.EtcdRangeStream: true}
	cases = append(cases,
		suiteCase{name: "List/rangeStream=true", gates: rangeStream, run: plain(func(t *testing.T, s *testStore) {
			recorder := s.client.Kubernetes.(*storagetesting.KubernetesRecorder)
			storagetesting.RunTestList(context.Background(), t, s, s.compaction(), false, recorder)
		})},
		suiteCase{name: "ConsistentList/rangeStream=true", gates: rangeStream, run: plain(func(t *testing.T, s *testStore) {
			storagetesting.RunTestConsistentList(context.Background(), t, s, increaseRV(s.client.Client), false, true, false)
		})},
		suiteCase{name: "Watch/RangeStream=true/WatchSemantics", gates: rangeStream, run: plain(func(t *testing.T, s *testStore) {
			storagetesting.RunWatchSemantics(context.Background(), t, s)
		})},
		suiteCase{name: "Watch/RangeStream=true/WatchSemanticInitialEventsExtended", gates: rangeStream, run: plain(func(t *testing.T, s *testStore) {
			storagetesting.RunWatchSemanticInitialEventsExtended(context.Background(), t, s)
		})},
		suiteCase{name: "Watch/RangeStream=true/WatchListMatchSingle", gates: rangeStream, run: plain(func(t *testing.T, s *testStore) {
			storagetesting.RunWatchListMatchSingle(context.Background(), t, s)
		})},
	)
	for i := range cases {
		cases[i].name = "store/" + cases[i].name
	}
	return cases
}

// allCases are the store cases, then the watch cache cases.
func allCases() []suiteCase {
	return append(storeCases(), cacherCases()...)
}

func watchCases(plain func(run func(t *testing.T, s *testStore)) func(*testing.T, *kubernetes.Client)) []suiteCase {
	return []suiteCase{
		{name: "Watch/Watch", run: plain(func(t *testing.T, s *testStore) {
			storagetesting.RunTestWatch(context.Background(), t, s)
		})},
		{name: "Watch/ClusterScopedWatch", run: plain(func(t *testing.T, s *testStore) {
			storagetesting.RunTestClusterScopedWatch(context.Background(), t, s)
		})},
		{name: "Watch/NamespaceScopedWatch", run: plain(func(t *testing.T, s *testStore) {
			storagetesting.RunTestNamespaceScopedWatch(context.Background(), t, s)
		})},
		{name: "Watch/DeleteTriggerWatch", run: plain(func(t *testing.T, s *testStore) {
			storagetesting.RunTestDeleteTriggerWatch(context.Background(), t, s)
		})},
		{name: "Watch/WatchFromZero", run: plain(func(t *testing.T, s *testStore) {
			storagetesting.RunTestWatchFromZero(context.Background(), t, s, s.compaction())
		})},
		{name: "Watch/WatchFromNonZero", run: plain(func(t *testing.T, s *testStore) {
			storagetesting.RunTestWatchFromNonZero(context.Background(), t, s)
		})},
		{name: "Watch/DelayedWatchDelivery", run: plain(func(t *testing.T, s *testStore) {
			storagetesting.RunTestDelayedWatchDelivery(context.Background(), t, s)
		})},
		{name: "Watch/WatchError", run: plain(func(t *testing.T, s *testStore) {
			storagetesting.RunTestWatchError(context.Background(), t, s)
		})},
		{name: "Watch/WatchContextCancel", run: plain(func(t *testing.T, s *testStore) {
			storagetesting.RunTestWatchContextCancel(context.Background(), t, s)
		})},
		{name: "Watch/WatcherTimeout", run: plain(func(t *testing.T, s *testStore) {
			storagetesting.RunTestWatcherTimeout(context.Background(), t, s)
		})},
		{name: "Watch/WatchDeleteEventObjectHaveLatestRV", run: plain(func(t *testing.T, s *testStore) {
			storagetesting.RunTestWatchDeleteEventObjectHaveLatestRV(context.Background(), t, s)
		})},
		{name: "Watch/WatchInitializationSignal", run: plain(func(t *testing.T, s *testStore) {
			storagetesting.RunTestWatchInitializationSignal(context.Background(), t, s)
		})},
		{name: "Watch/ProgressNotify", run: plain(func(t *testing.T, s *testStore) {
			storagetesting.RunOptionalTestProgressNotify(context.Background(), t, s, increaseRV(s.client.Client))
		})},
		{name: "Watch/WatchWithUnsafeDelete", skip: bothBackends(notWired)},
		{name: "Watch/WatchDispatchBookmarkEvents", run: plain(func(t *testing.T, s *testStore) {
			storagetesting.RunTestWatchDispatchBookmarkEvents(context.Background(), t, s, false)
		})},
		{name: "Watch/SendInitialEventsBackwardCompatibility", run: plain(func(t *testing.T, s *testStore) {
			storagetesting.RunSendInitialEventsBackwardCompatibility(context.Background(), t, s)
		})},
		{name: "Watch/WatchSemantics", run: plain(func(t *testing.T, s *testStore) {
			storagetesting.RunWatchSemantics(context.Background(), t, s)
		})},
		{name: "Watch/WatchSemanticsWithConcurrentDecode",
			gates: map[featuregate.Feature]bool{features.ConcurrentWatchObjectDecode: true},
			run: plain(func(t *testing.T, s *testStore) {
				storagetesting.RunWatchSemantics(context.Background(), t, s)
			})},
		{name: "Watch/WatchSemanticInitialEventsExtended", run: plain(func(t *testing.T, s *testStore) {
			storagetesting.RunWatchSemanticInitialEventsExtended(context.Background(), t, s)
		})},
		{name: "Watch/WatchListMatchSingle", run: plain(func(t *testing.T, s *testStore) {
			storagetesting.RunWatchListMatchSingle(context.Background(), t, s)
		})},
		{name: "Watch/WatchErrorEventIsBlockingFurtherEvent", run: plain(func(t *testing.T, s *testStore) {
			storagetesting.RunWatchErrorIsBlockingFurtherEvents(context.Background(), t, s)
		})},
	}
}

func bothBackends(reason string) map[string]string {
	return map[string]string{"etcd": reason, "router": reason}
}

// newStoreCodec is the codec the etcd3 store writes pods with.
func newStoreCodec() runtime.Codec {
	return apitesting.TestCodec(codecs, examplev1.SchemeGroupVersion)
}
