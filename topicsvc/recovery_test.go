package topicsvc_test

import (
	"testing"

	"github.com/OSMeteor/firetower"
	"github.com/OSMeteor/firetower/internal/recoverytest"
	"github.com/OSMeteor/firetower/topicsvc/internal/svctest"
)

// TestRecoveryGaplessOnService: three nodes of a standalone topic service
// process, publishers on each, clients recovering again and again on any
// node while messages travel over the network.
func TestRecoveryGaplessOnService(t *testing.T) {
	svc := svctest.Start(t, "127.0.0.1:0")
	var towers []*firetower.Tower
	for range 3 {
		tw, err := firetower.New(firetower.Config{
			BrokerURL:    "topicsvc://" + svc.Addr,
			BrokerToken:  svctest.Token,
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
