//go:build tools

// Package tools pins the kwok command that scripts/cluster-binaries.sh builds.
package tools

import _ "sigs.k8s.io/kwok/cmd/kwok"
