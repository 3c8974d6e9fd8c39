//go:build tools

// Package tools pins the kustomize command that scripts/render-tools.sh builds.
package tools

import _ "sigs.k8s.io/kustomize/kustomize/v5"
