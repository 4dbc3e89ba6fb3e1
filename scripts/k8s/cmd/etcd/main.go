// Command etcd is etcd's own server main (etcdmain), at the etcd version that the Kubernetes
// release in go.mod requires, built as a binary of its own.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
