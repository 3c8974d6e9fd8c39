// Command cliutils-apply applies a folder of manifests with cli-utils'
// applier (inventory, prune, status wait), as the GitLab agent does, and
// prints what it took as JSON.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"time"

	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/client-go/rest"
	"k8s.io/kubectl/pkg/cmd/util"
	"sigs.k8s.io/cli-utils/pkg/apply"
	"sigs.k8s.io/cli-utils/pkg/apply/event"
	"sigs.k8s.io/cli-utils/pkg/common"
	"sigs.k8s.io/cli-utils/pkg/inventory"
	"sigs.k8s.io/cli-utils/pkg/manifestreader"
)

func main() {
	kubeconfig := flag.String("kubeconfig", "", "kubeconfig")
	dir := flag.String("dir", "", "folder of manifests")
	namespace := flag.String("namespace", "default", "namespace for objects and the inventory")
	inventoryID := flag.String("inventory-id", "bench", "inventory id")
	_ = flag.String("inventory", "", "unused: the inventory is a ConfigMap")
	// client-go's defaults (5, 10) are what a client that sets none gets;
	// a negative QPS turns client-side rate limiting off.
	qps := flag.Float64("qps", 5, "client QPS (negative: no client-side limit)")
	burst := flag.Int("burst", 10, "client burst")
	flag.Parse()

	flags := genericclioptions.NewConfigFlags(true)
	flags.KubeConfig = kubeconfig
	flags.Namespace = namespace
	flags.WithWrapConfigFn(func(c *rest.Config) *rest.Config {
		c.QPS, c.Burst = float32(*qps), *burst
		return c
	})
	factory := util.NewFactory(flags)

	started := time.Now()
	mapper, err := factory.ToRESTMapper()
	check(err)
	reader := &manifestreader.PathManifestReader{
		Path: *dir,
		ReaderOptions: manifestreader.ReaderOptions{
			Mapper:           mapper,
			Namespace:        *namespace,
			EnforceNamespace: false,
		},
	}
	objs, err := reader.Read()
	check(err)
	invClient, err := inventory.ClusterClientFactory{StatusPolicy: inventory.StatusPolicyNone}.NewClient(factory)
	check(err)
	applier, err := apply.NewApplierBuilder().WithFactory(factory).WithInventoryClient(invClient).Build()
	check(err)
	inv := inventory.WrapInventoryInfoObj(inventoryTemplate(*namespace, *inventoryID))
	ctx := context.Background()
	var applied, skipped, pruned, failed int
	for e := range applier.Run(ctx, inv, objs, apply.ApplierOptions{
		ServerSideOptions: common.ServerSideOptions{ServerSideApply: true, ForceConflicts: true, FieldManager: "cliutils-bench"},
		ReconcileTimeout:  5 * time.Minute,
		EmitStatusEvents:  false,
		InventoryPolicy:   inventory.PolicyAdoptIfNoInventory,
	}) {
		switch e.Type {
		case event.ErrorType:
			check(e.ErrorEvent.Err)
		case event.ApplyType:
			switch e.ApplyEvent.Status {
			case event.ApplySuccessful:
				applied++
			case event.ApplySkipped:
				skipped++
			case event.ApplyFailed:
				failed++
			}
		case event.PruneType:
			if e.PruneEvent.Status == event.PruneSuccessful {
				pruned++
			}
		}
	}
	out, _ := json.Marshal(map[string]any{
		"engine": "cli-utils v0.37.2", "ms": time.Since(started).Milliseconds(),
		"applied": applied, "skipped": skipped, "pruned": pruned, "failed": failed,
	})
	fmt.Println(string(out))
}

func check(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
