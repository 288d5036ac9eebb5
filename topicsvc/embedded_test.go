package topicsvc_test

import (
	"testing"

	"github.com/OSMeteor/firetower/broker"
	"github.com/OSMeteor/firetower/broker/brokertest"
	"github.com/OSMeteor/firetower/topicsvc"
)

func TestEmbeddedConformance(t *testing.T) {
	brokertest.Run(t, brokertest.Config{Streams: true, NewCluster: func(t *testing.T, n int) []broker.Broker {
		core := topicsvc.NewCore()
		bs := make([]broker.Broker, n)
		for i := range bs {
			bs[i] = core.Embedded()
		}
		return bs
	}})
}

// TestEmbeddedInProcess: a node may skip its BrokerTimeout timer for the
// embedded broker, which never waits on a network.
func TestEmbeddedInProcess(t *testing.T) {
	var b broker.Broker = topicsvc.NewEmbedded()
	defer b.Close()
	if ip, ok := b.(broker.InProcess); !ok || !ip.InProcess() {
		t.Fatalf("%T does not report itself in-process", b)
	}
}
