// Command fluxssa-apply applies a folder of manifests with Flux's engine,
// fluxcd/pkg/ssa's ResourceManager (ApplyAllStaged, then WaitForSet), as
// kustomize-controller does, prunes what its inventory file held and the
// folder no longer does, and prints what it took as JSON.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"time"

	"github.com/fluxcd/cli-utils/pkg/kstatus/polling"
	"github.com/fluxcd/cli-utils/pkg/object"
	"github.com/fluxcd/pkg/ssa"
	ssautil "github.com/fluxcd/pkg/ssa/utils"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/apiutil"
)

func main() {
	kubeconfig := flag.String("kubeconfig", "", "kubeconfig")
	dir := flag.String("dir", "", "folder of manifests")
	namespace := flag.String("namespace", "default", "namespace for objects that name none")
	inventoryFile := flag.String("inventory", "", "file keeping the applied set between runs")
	_ = flag.String("inventory-id", "", "unused: the inventory is the file")
	// kustomize-controller's defaults; a negative QPS turns client-side
	// rate limiting off.
	qps := flag.Float64("qps", 50, "client QPS (negative: no client-side limit)")
	burst := flag.Int("burst", 100, "client burst")
	flag.Parse()

	started := time.Now()
	cfg, err := clientcmd.BuildConfigFromFlags("", *kubeconfig)
	check(err)
	cfg.QPS, cfg.Burst = float32(*qps), *burst
	httpClient, err := rest.HTTPClientFor(cfg)
	check(err)
	mapper, err := apiutil.NewDynamicRESTMapper(cfg, httpClient)
	check(err)
	kube, err := client.New(cfg, client.Options{Mapper: mapper})
	check(err)
	poller := polling.NewStatusPoller(kube, mapper, polling.Options{})
	manager := ssa.NewResourceManager(kube, poller, ssa.Owner{Field: "fluxssa-bench", Group: "bench.fluxcd.io"})
	manager.SetConcurrency(4) // kustomize-controller's --concurrent-ssa default

	var objects []*unstructured.Unstructured
	files, err := filepath.Glob(filepath.Join(*dir, "*.yaml"))
	check(err)
	sort.Strings(files)
	for _, f := range files {
		data, err := os.ReadFile(f)
		check(err)
		read, err := ssautil.ReadObjects(bytes.NewReader(data))
		check(err)
		objects = append(objects, read...)
	}
	for _, o := range objects {
		if o.GetNamespace() == "" && o.GetKind() != "Namespace" && o.GetKind() != "CustomResourceDefinition" {
			o.SetNamespace(*namespace)
		}
	}
	manager.SetOwnerLabels(objects, "bench", *namespace)
	ctx := context.Background()
	changes, err := manager.ApplyAllStaged(ctx, objects, ssa.DefaultApplyOptions())
	check(err)
	counts := map[string]int{}
	for _, e := range changes.Entries {
		counts[string(e.Action)]++
	}
	check(manager.WaitForSet(changes.ToObjMetadataSet(), ssa.WaitOptions{Interval: 500 * time.Millisecond, Timeout: 5 * time.Minute}))

	// Prune: what the last run applied and this one does not.
	applied := changes.ToObjMetadataSet()
	if previous, err := os.ReadFile(*inventoryFile); err == nil {
		var before object.ObjMetadataSet
		check(json.Unmarshal(previous, &before))
		var stale []*unstructured.Unstructured
		for _, m := range before.Diff(applied) {
			u := &unstructured.Unstructured{}
			u.SetGroupVersionKind(m.GroupKind.WithVersion(""))
			mapping, err := mapper.RESTMapping(m.GroupKind)
			check(err)
			u.SetGroupVersionKind(mapping.GroupVersionKind)
			u.SetNamespace(m.Namespace)
			u.SetName(m.Name)
			stale = append(stale, u)
		}
		deleted, err := manager.DeleteAll(ctx, stale, ssa.DefaultDeleteOptions())
		check(err)
		counts["deleted"] = len(deleted.Entries)
		check(manager.WaitForTermination(stale, ssa.WaitOptions{Interval: 500 * time.Millisecond, Timeout: 5 * time.Minute}))
	}
	data, err := json.Marshal(applied)
	check(err)
	check(os.WriteFile(*inventoryFile, data, 0o600))
	out, _ := json.Marshal(map[string]any{"engine": "fluxcd/pkg/ssa v0.78.0", "ms": time.Since(started).Milliseconds(), "actions": counts})
	fmt.Println(string(out))
}

func check(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
