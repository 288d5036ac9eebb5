//go:build before

package main

import "github.com/OSMeteor/firetower"

// applyLimits: a firetower from before the inbound budget has no such
// fields.
func applyLimits(*firetower.Config) {}
