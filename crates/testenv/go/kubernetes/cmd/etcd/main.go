// Command etcd is the stock etcd server at the version Kubernetes pins.
//
// The etcd root module is not importable from here, so this calls the same
// entry point its main package does.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
