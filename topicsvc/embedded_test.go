package topicsvc_test

import (
	"testing"

	"github.com/OSMeteor/firetower/broker"
	"github.com/OSMeteor/firetower/broker/brokertest"
	"github.com/OSMeteor/firetower/topicsvc"
)

func TestEmbeddedConformance(t *testing.T) {
	brokertest.Run(t, brokertest.Config{NewCluster: func(t *testing.T, n int) []broker.Broker {
		core := topicsvc.NewCore()
		bs := make([]broker.Broker, n)
		for i := range bs {
			bs[i] = core.Embedded()
		}
		return bs
	}})
}
