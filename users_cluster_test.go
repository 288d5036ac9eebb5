package firetower_test

import (
	"testing"

	"github.com/OSMeteor/firetower"
	"github.com/OSMeteor/firetower/internal/presencetest"
	"github.com/OSMeteor/firetower/internal/userstest"
	"github.com/OSMeteor/firetower/topicsvc"
)

// TestUsersAcrossNodes: push to a user, disconnect a user and
// MaxConnsPerUser across two nodes on one embedded core.
func TestUsersAcrossNodes(t *testing.T) {
	core := topicsvc.NewCore()
	userstest.Run(t, func(t *testing.T, cfg firetower.Config) *firetower.Tower {
		cfg.Broker = core.Embedded()
		tw, err := firetower.New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { tw.Shutdown(t.Context()) })
		return tw
	})
}

// TestPresenceAcrossNodes: presence, join and leave across two nodes on
// one embedded core.
func TestPresenceAcrossNodes(t *testing.T) {
	core := topicsvc.NewCore()
	presencetest.Run(t, func(t *testing.T, cfg firetower.Config) *firetower.Tower {
		cfg.Broker = core.Embedded()
		tw, err := firetower.New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { tw.Shutdown(t.Context()) })
		return tw
	})
}
