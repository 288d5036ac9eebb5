package client_test

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/OSMeteor/firetower/broker"
	"github.com/OSMeteor/firetower/broker/brokertest"
	"github.com/OSMeteor/firetower/topicsvc/client"
	"github.com/OSMeteor/firetower/topicsvc/internal/svctest"
)

// TestThreeNodes runs one service and three nodes through delivery, order,
// payloads, odd topics and counts.
func TestThreeNodes(t *testing.T) {
	svc := svctest.Start(t, "127.0.0.1:0")
	n := []*svctest.Node{
		svctest.DialNode(t, svc.Addr, client.Options{}),
		svctest.DialNode(t, svc.Addr, client.Options{}),
		svctest.DialNode(t, svc.Addr, client.Options{}),
	}
	ctx := svctest.Ctx(t)
	reset := func() {
		for _, nd := range n {
			nd.Rec.Reset()
		}
	}

	t.Run("CrossNodeDelivery", func(t *testing.T) {
		reset()
		must(t, n[0].Subscribe(ctx, "/chat/world"))
		must(t, n[1].Subscribe(ctx, "/chat/world"))
		must(t, n[2].Publish(ctx, broker.Message{Topic: "/chat/world", ID: "m1", Data: []byte(`{"text":"hi"}`)}))
		for i, nd := range n[:2] {
			got := nd.Rec.WaitN(t, 1, 10*time.Second)
			if m := got[0]; m.Topic != "/chat/world" || m.ID != "m1" || string(m.Data) != `{"text":"hi"}` {
				t.Fatalf("node %d got %+v", i, m)
			}
		}
		time.Sleep(100 * time.Millisecond)
		if got := n[2].Rec.Count(); got != 0 {
			t.Fatalf("the publisher, not subscribed, got %d messages", got)
		}
	})

	t.Run("PerPublisherOrder", func(t *testing.T) {
		reset()
		must(t, n[0].Subscribe(ctx, "order"))
		must(t, n[1].Subscribe(ctx, "order"))
		const total = 1000
		for i := range total {
			must(t, n[2].Publish(ctx, broker.Message{Topic: "order", ID: fmt.Sprint(i), Data: []byte(fmt.Sprint(i))}))
		}
		for k, nd := range n[:2] {
			got := nd.Rec.WaitFor(t, 10*time.Second, "1000 ordered messages", func(ms []broker.Message) bool {
				c := 0
				for _, m := range ms {
					if m.Topic == "order" {
						c++
					}
				}
				return c >= total
			})
			i := 0
			for _, m := range got {
				if m.Topic != "order" {
					continue
				}
				if m.ID != fmt.Sprint(i) || string(m.Data) != fmt.Sprint(i) {
					t.Fatalf("node %d: message %d is %s: out of order", k, i, m.ID)
				}
				i++
			}
		}
	})

	t.Run("Payloads", func(t *testing.T) {
		reset()
		must(t, n[1].Subscribe(ctx, "payloads"))
		rnd := rand.New(rand.NewPCG(3, 4))
		var sent [][]byte
		for _, size := range []int{0, 4 << 10, 64 << 10, 1 << 20} {
			b := brokertest.RandomJSON(rnd, size)
			sent = append(sent, b)
			must(t, n[0].Publish(ctx, broker.Message{Topic: "payloads", ID: fmt.Sprint(size), Data: b}))
		}
		// A message after the large ones shows the stream is still in step.
		must(t, n[0].Publish(ctx, broker.Message{Topic: "payloads", ID: "after", Data: []byte(`"after"`)}))
		got := n[1].Rec.WaitN(t, len(sent)+1, 10*time.Second)
		for i, b := range sent {
			if !bytes.Equal(got[i].Data, b) {
				t.Fatalf("payload of %d bytes arrived as %d different bytes", len(b), len(got[i].Data))
			}
		}
		if got[len(sent)].ID != "after" {
			t.Fatalf("last message %+v", got[len(sent)])
		}
	})

	t.Run("OddTopics", func(t *testing.T) {
		reset()
		carried := []string{"with space", "tab\there", "/chat/世界 room", "émoji 🔥", `quote"back\slash`, "new\nline", strings.Repeat("x", 256)}
		for _, topic := range carried {
			must(t, n[0].Subscribe(ctx, topic))
		}
		refused := []string{"", "\xff\xfe", strings.Repeat("y", 257)}
		for _, topic := range refused {
			if err := n[0].Subscribe(ctx, topic); err == nil || !strings.Contains(err.Error(), "topic") {
				t.Errorf("Subscribe(%q) = %v, want a clear topic error", topic, err)
			}
			if err := n[2].Publish(ctx, broker.Message{Topic: topic, ID: "bad", Data: []byte("1")}); err == nil || !strings.Contains(err.Error(), "topic") {
				t.Errorf("Publish(%q) = %v, want a clear topic error", topic, err)
			}
			if _, err := n[2].Count(ctx, topic); err == nil {
				t.Errorf("Count(%q) succeeded", topic)
			}
		}
		for i, topic := range carried {
			must(t, n[2].Publish(ctx, broker.Message{Topic: topic, ID: fmt.Sprint(i), Data: []byte(fmt.Sprint(i))}))
		}
		must(t, n[0].Subscribe(ctx, "plain"))
		must(t, n[2].Publish(ctx, broker.Message{Topic: "plain", ID: "plain", Data: []byte(`"still fine"`)}))
		got := n[0].Rec.WaitN(t, len(carried)+1, 5*time.Second)
		for i, topic := range carried {
			if got[i].Topic != topic || got[i].ID != fmt.Sprint(i) {
				t.Errorf("message %d: got topic %q id %q, want %q", i, got[i].Topic, got[i].ID, topic)
			}
		}
		if last := got[len(carried)]; last.Topic != "plain" || string(last.Data) != `"still fine"` {
			t.Fatalf("message after the odd topics: %+v", last)
		}
	})

	t.Run("CountsSumAndDropWhenANodeIsKilled", func(t *testing.T) {
		const topic = "/count/room"
		for _, nd := range n {
			must(t, nd.Subscribe(ctx, topic))
		}
		n[0].SetCount(topic, 2)
		n[1].SetCount(topic, 3)
		n[2].SetCount(topic, 4)
		for _, nd := range n {
			brokertest.Eventually(t, 10*time.Second, brokertest.CountIs(ctx, nd, topic, 9))
		}
		// A fourth node in a process of its own, killed like a crashed gateway.
		helper := svctest.StartHelperNode(t, svc.Addr, topic, 5)
		for _, nd := range n {
			brokertest.Eventually(t, 10*time.Second, brokertest.CountIs(ctx, nd, topic, 14))
		}
		must(t, helper.Process.Kill())
		killed := time.Now()
		helper.Wait()
		brokertest.Eventually(t, 5*time.Second, brokertest.CountIs(ctx, n[0], topic, 9))
		t.Logf("the killed node's count vanished %v after SIGKILL", time.Since(killed).Round(time.Millisecond))
		for _, nd := range n {
			nd.SetCount(topic, 0)
		}
		brokertest.Eventually(t, 10*time.Second, brokertest.CountIs(ctx, n[1], topic, 0))
	})
}
