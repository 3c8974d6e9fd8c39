//go:build tools

// Package tools pins the registry command that scripts/oci-registry.sh builds.
package tools

import _ "github.com/distribution/distribution/v3/cmd/registry"
