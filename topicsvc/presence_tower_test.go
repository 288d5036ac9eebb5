package topicsvc_test

import (
	"testing"

	"github.com/OSMeteor/firetower"
	"github.com/OSMeteor/firetower/internal/presencetest"
	"github.com/OSMeteor/firetower/topicsvc/internal/svctest"
)

// TestPresenceOnService: presence, join and leave frames, REST presence
// and a reload onto the other node, across two nodes of a standalone
// topic service process.
func TestPresenceOnService(t *testing.T) {
	svc := svctest.Start(t, "127.0.0.1:0")
	presencetest.Run(t, func(t *testing.T, cfg firetower.Config) *firetower.Tower {
		cfg.BrokerURL = "topicsvc://" + svc.Addr
		cfg.BrokerToken = svctest.Token
		tw, err := firetower.New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { tw.Shutdown(t.Context()) })
		return tw
	})
}
