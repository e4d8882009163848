package main

import (
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// How long the namespace's ServiceAccount and a cleanup may take.
const (
	waitServiceAccount = 60 * time.Second
	waitCleanup        = 120 * time.Second
)

// prepareNamespace creates the namespace if missing and waits for its
// ServiceAccount "default": the ServiceAccount admission plugin refuses
// Pods until kube-controller-manager has created it.
func prepareNamespace(ctx context.Context, cs kubernetes.Interface, ns string) error {
	_, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("creating namespace %s: %w", ns, err)
	}
	deadline := time.Now().Add(waitServiceAccount)
	for {
		_, err := cs.CoreV1().ServiceAccounts(ns).Get(ctx, "default", metav1.GetOptions{})
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("ServiceAccount %s/default missing after %s (is kube-controller-manager running?): %w", ns, waitServiceAccount, err)
		}
		sleepCtx(ctx, 200*time.Millisecond)
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
}

// cleanup deletes the Pods matching selector at once (grace period 0: kwok
// runs no containers to stop) and waits until a list finds none.
func cleanup(ctx context.Context, cs kubernetes.Interface, ns, selector string) error {
	pods := cs.CoreV1().Pods(ns)
	err := pods.DeleteCollection(ctx, metav1.DeleteOptions{GracePeriodSeconds: new(int64(0))},
		metav1.ListOptions{LabelSelector: selector})
	if err != nil {
		return fmt.Errorf("deleting the Pods %s: %w", selector, err)
	}
	deadline := time.Now().Add(waitCleanup)
	for {
		list, err := pods.List(ctx, metav1.ListOptions{LabelSelector: selector})
		if err == nil && len(list.Items) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			left := -1
			if list != nil {
				left = len(list.Items)
			}
			return fmt.Errorf("%d Pods %s still there after %s (last error: %v)", left, selector, waitCleanup, err)
		}
		sleepCtx(ctx, 250*time.Millisecond)
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
}
