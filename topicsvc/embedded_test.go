package topicsvc_test

import (
	"testing"
	"time"

	"github.com/OSMeteor/firetower/broker"
	"github.com/OSMeteor/firetower/broker/brokertest"
	"github.com/OSMeteor/firetower/topicsvc"
)

// TestEmbeddedConformance: nodes of one process sharing a Core. A killed
// node disappears from the Core as a session whose connection closed
// would (Node.Remove, the leaves after their grace): the Embedded broker
// itself is left as it was, withdrawing nothing.
func TestEmbeddedConformance(t *testing.T) {
	brokertest.Run(t, brokertest.Config{
		Streams:  true,
		Presence: true,
		NewCluster: func(t *testing.T, n int) []broker.Broker {
			core := topicsvc.NewCore()
			bs := make([]broker.Broker, n)
			for i := range bs {
				bs[i] = core.Embedded()
			}
			return bs
		},
		Kill: func(t *testing.T, b broker.Broker) {
			n := topicsvc.EmbeddedNode(b.(*topicsvc.Embedded))
			if n == nil {
				t.Fatal("Kill of an embedded broker that was not started")
			}
			n.Remove()
		},
		// In process, the node's removal is its death: what remains is the
		// grace of its users' leaves (300 ms in the suite).
		NodeDeath: time.Second,
	})
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
