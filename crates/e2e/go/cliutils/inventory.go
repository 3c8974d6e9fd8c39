package main

import (
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/cli-utils/pkg/common"
)

// inventoryTemplate is the ConfigMap cli-utils keeps its inventory in.
func inventoryTemplate(namespace, id string) *unstructured.Unstructured {
	return &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "v1",
		"kind":       "ConfigMap",
		"metadata": map[string]any{
			"name":      "inventory-" + id,
			"namespace": namespace,
			"labels":    map[string]any{common.InventoryLabel: id},
		},
	}}
}
