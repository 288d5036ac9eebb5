package client_test

import (
	"errors"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/OSMeteor/firetower/broker"
	"github.com/OSMeteor/firetower/broker/brokertest"
	"github.com/OSMeteor/firetower/topicsvc/client"
	"github.com/OSMeteor/firetower/topicsvc/internal/svctest"
)

// TestStats follows a node's own figures through publishes, an
// outage of the service and its return on the same address.
func TestStats(t *testing.T) {
	svc := svctest.Start(t, "127.0.0.1:0")
	nd := svctest.DialNode(t, svc.Addr, client.Options{})
	ctx := svctest.Ctx(t)
	start := time.Now()

	s := nd.Stats()
	if !s.Connected || s.Sessions != 1 || s.Reconnects != 0 || s.SessionsLost != 0 || s.LastConnect.IsZero() || !s.LastDisconnect.IsZero() || s.LastError != "" {
		t.Fatalf("after Dial: %+v", s)
	}
	must(t, nd.Subscribe(ctx, "s"))
	for i := range 5 {
		must(t, nd.Publish(ctx, broker.Message{Topic: "s", ID: strconv.Itoa(i), Data: []byte("1")}))
	}
	if err := nd.Publish(ctx, broker.Message{Topic: "", Data: []byte("1")}); err == nil {
		t.Fatal("Publish to an empty topic succeeded")
	}
	nd.Rec.WaitN(t, 5, 5*time.Second)
	brokertest.Eventually(t, 10*time.Second, func() error {
		if s := nd.Stats(); s.Published != 5 || s.Received != 5 || s.PublishErrors != 1 || s.Refused != 0 {
			return fmt.Errorf("after 5 publishes and a refused one: %+v", s)
		}
		return nil
	})

	addr := svc.Addr
	svc.Kill()
	brokertest.Eventually(t, 5*time.Second, func() error {
		if s := nd.Stats(); s.Connected || s.SessionsLost != 1 || s.LastDisconnect.Before(start) || s.LastError == "" || s.ConnectFailures < 1 {
			return fmt.Errorf("while the service is down: %+v", s)
		}
		return nil
	})
	if err := nd.Publish(ctx, broker.Message{Topic: "s", ID: "lost", Data: []byte("1")}); !errors.Is(err, broker.ErrUnavailable) {
		t.Fatalf("Publish while down: %v", err)
	}
	m := nd.BrokerStats()
	if m["connected"] != 0 || m["sessions_lost_total"] != 1 || m["publish_errors_total"] != 2 || m["last_disconnect_timestamp_seconds"] < start.Unix() {
		t.Fatalf("BrokerStats while down: %v", m)
	}

	svctest.Start(t, addr)
	brokertest.Eventually(t, 15*time.Second, func() error {
		if s := nd.Stats(); !s.Connected || s.Sessions != 2 || s.Reconnects != 1 || nd.Reconnects() != 1 || !s.LastConnect.After(s.LastDisconnect) {
			return fmt.Errorf("after the service came back: %+v", s)
		}
		return nil
	})
	m = nd.BrokerStats()
	want := map[string]int64{"connected": 1, "sessions_total": 2, "reconnects_total": 1, "sessions_lost_total": 1,
		"messages_published_total": 5, "publish_errors_total": 2, "messages_received_total": 5, "refused_total": 0}
	for k, v := range want {
		if m[k] != v {
			t.Fatalf("BrokerStats()[%q] = %d, want %d (all: %v)", k, m[k], v, m)
		}
	}
	if len(m) != 12 || m["stalls_total"] != 0 || m["connect_failures_total"] < 1 || m["last_connect_timestamp_seconds"] < start.Unix() {
		t.Fatalf("BrokerStats: %v", m)
	}

	must(t, nd.Close())
	if s := nd.Stats(); s.Connected || s.SessionsLost != 1 {
		t.Fatalf("after Close: %+v", s)
	}
}
