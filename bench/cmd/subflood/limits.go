//go:build !before

package main

import (
	"log"
	"strconv"
	"strings"

	"github.com/OSMeteor/firetower"
)

// applyLimits sets the Config fields that -limit names. The "before" build
// (-tags before, for a firetower without these fields) ignores them.
func applyLimits(cfg *firetower.Config) {
	for _, l := range limits {
		name, value, _ := strings.Cut(l, "=")
		v, err := strconv.ParseFloat(value, 64)
		if err != nil {
			log.Fatalf("-limit %s: %v", l, err)
		}
		switch name {
		case "SubscribeRate":
			cfg.SubscribeRate, cfg.SubscribeBurst = v, int(2*v)
		case "InboundBytesRate":
			cfg.InboundBytesRate, cfg.InboundBytesBurst = v, int64(2*v)
		default:
			log.Fatalf("-limit %s: unknown field", name)
		}
	}
}
