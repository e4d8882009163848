// Command etcd36 is etcd 3.6 built from its published server module, for
// the storage conformance suite's STE_ETCD_BIN: kube-apiserver v0.37's
// storage packages need etcd 3.7 modules in their own Go module, so an
// etcd 3.6 server can only come from a module of its own.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
