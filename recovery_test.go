package firetower_test

import (
	"testing"

	"github.com/OSMeteor/firetower"
	"github.com/OSMeteor/firetower/internal/recoverytest"
	"github.com/OSMeteor/firetower/topicsvc"
)

// TestRecoveryGaplessAcrossNodes: three nodes on one embedded core,
// publishers on each, clients recovering again and again on any node.
func TestRecoveryGaplessAcrossNodes(t *testing.T) {
	core := topicsvc.NewCore()
	var towers []*firetower.Tower
	for range 3 {
		tw, err := firetower.New(firetower.Config{
			Broker:       core.Embedded(),
			TopicOptions: func(string) firetower.TopicOptions { return firetower.TopicOptions{HistorySize: 5000} },
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { tw.Shutdown(t.Context()) })
		towers = append(towers, tw)
	}
	recoverytest.Run(t, recoverytest.Config{Towers: towers, Topic: "/room"})
}
