package server_test

import (
	"bytes"
	"errors"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/OSMeteor/firetower/broker"
	"github.com/OSMeteor/firetower/broker/brokertest"
	"github.com/OSMeteor/firetower/topicsvc/client"
	"github.com/OSMeteor/firetower/topicsvc/internal/svctest"
	pb "github.com/OSMeteor/firetower/topicsvc/topicsvcpb"
	"google.golang.org/grpc/codes"
)

// rawSession opens a session as a node would, speaking the protocol
// directly, and returns it after the welcome.
func rawSession(t *testing.T, addr, nodeID string) pb.TopicService_SessionClient {
	t.Helper()
	stream, err := pushClient(t, addr).Session(withToken(svctest.Ctx(t), svctest.Token))
	must(t, err)
	must(t, stream.Send(&pb.NodeFrame{Ops: []*pb.NodeOp{{Op: &pb.NodeOp_Hello{Hello: &pb.Hello{NodeId: nodeID}}}}}))
	f, err := stream.Recv()
	must(t, err)
	if w := f.GetOps()[0].GetWelcome(); w == nil || !w.GetStreams() {
		t.Fatalf("first frame %v, want a welcome that says the service keeps streams", f)
	}
	return stream
}

// answers reads the session until want answers (acks and history results,
// by seq) arrived, and returns them with the deliveries read meanwhile.
func answers(t *testing.T, stream pb.TopicService_SessionClient, want int) (map[uint64]*pb.Ack, map[uint64]*pb.HistoryResult, []*pb.Batch) {
	t.Helper()
	acks, hists := map[uint64]*pb.Ack{}, map[uint64]*pb.HistoryResult{}
	var deliveries []*pb.Batch
	for len(acks)+len(hists) < want {
		f, err := stream.Recv()
		must(t, err)
		for _, o := range f.GetOps() {
			if a := o.GetAck(); a != nil {
				acks[a.GetSeq()] = a
			}
			if h := o.GetHistory(); h != nil {
				hists[h.GetSeq()] = h
			}
		}
		if b := f.GetDeliveries(); b != nil {
			deliveries = append(deliveries, b)
		}
	}
	return acks, hists, deliveries
}

func streamPublish(seq uint64, topic, id, data string, size uint32, ttlMs uint64) *pb.NodeOp {
	return &pb.NodeOp{Op: &pb.NodeOp_StreamPublish{StreamPublish: &pb.StreamPublish{Seq: seq, Topic: topic, Id: id, Data: []byte(data), Size: size, TtlMs: ttlMs}}}
}

func historyQuery(seq uint64, topic string, limit, size uint32, ttlMs uint64, since *pb.StreamPosition) *pb.NodeOp {
	return &pb.NodeOp{Op: &pb.NodeOp_HistoryQuery{HistoryQuery: &pb.HistoryQuery{Seq: seq, Topic: topic, Limit: limit, Since: since, Size: size, TtlMs: ttlMs}}}
}

// TestSessionRefusesBadStreamOps speaks the session protocol directly, as
// a buggy or hostile node might: every invalid stream publish and history
// query is refused with a clear error in its answer, nothing is appended,
// and the session goes on.
func TestSessionRefusesBadStreamOps(t *testing.T) {
	svc := svctest.Start(t, "127.0.0.1:0", "-max-message-size", "1000")
	stream := rawSession(t, svc.Addr, "raw")
	long := strings.Repeat("x", 300)
	bad := map[uint64]struct {
		op   *pb.NodeOp
		want string
	}{
		2:  {streamPublish(2, "", "m", `1`, 10, 60000), "empty topic"},
		3:  {streamPublish(3, long, "m", `1`, 10, 60000), "topic of 300 bytes"},
		4:  {streamPublish(4, "s", "m", `{"a":`, 10, 60000), "JSON"},
		5:  {streamPublish(5, "s", "m", `not json`, 10, 60000), "JSON"},
		6:  {streamPublish(6, "s", "m", "\"\xff\"", 10, 60000), "UTF-8"},
		7:  {streamPublish(7, "s", "m", `{"a":1},"topic":"x"`, 10, 60000), "JSON"},
		8:  {streamPublish(8, "s", "m", ``, 10, 60000), "JSON"},
		9:  {streamPublish(9, "s", "m", `1`, 0, 60000), "history size must be at least 1"},
		10: {streamPublish(10, "s", "m", `1`, 10, 0), "history TTL must be at least 1 ms"},
		11: {streamPublish(11, "s", "m", `1`, 1<<21, 60000), "history size 2097152, the limit is"},
		12: {streamPublish(12, "s", "m", `1`, 10, 1<<62), "history TTL of"},
		13: {streamPublish(13, "s", long, `1`, 10, 60000), "message id of 300 bytes"},
		14: {streamPublish(14, "s", "m", `"`+strings.Repeat("y", 1000)+`"`, 10, 60000), "1002 bytes, the limit is 1000"},
		15: {historyQuery(15, "", 10, 10, 60000, nil), "empty topic"},
		16: {historyQuery(16, long, 10, 10, 60000, nil), "topic of 300 bytes"},
		17: {historyQuery(17, "s", 10, 0, 60000, nil), "history size must be at least 1"},
		18: {historyQuery(18, "s", 10, 10, 0, nil), "history TTL must be at least 1 ms"},
	}
	ops := []*pb.NodeOp{{Op: &pb.NodeOp_Subscribe{Subscribe: &pb.Subscribe{Seq: 1, Topic: "s"}}}}
	for seq := uint64(2); seq <= 18; seq++ {
		ops = append(ops, bad[seq].op)
	}
	// Then a good stream publish and a read of what the stream holds.
	ops = append(ops, streamPublish(19, "s", "good", `{"ok":true}`, 10, 60000), historyQuery(20, "s", 100, 10, 60000, nil))
	must(t, stream.Send(&pb.NodeFrame{Ops: ops}))

	acks, hists, deliveries := answers(t, stream, 20)
	for seq, b := range bad {
		var got string
		if a := acks[seq]; a != nil {
			got = a.GetError()
			if a.GetOffset() != 0 || a.GetEpoch() != "" {
				t.Errorf("refused op %d answered a position %d %q", seq, a.GetOffset(), a.GetEpoch())
			}
		} else if h := hists[seq]; h != nil {
			got = h.GetError()
			if h.GetEpoch() != "" || h.GetMessages() != nil {
				t.Errorf("refused query %d answered %v", seq, h)
			}
		}
		if !strings.Contains(got, b.want) {
			t.Errorf("op %d: refused with %q, want an error that says %q", seq, got, b.want)
		}
	}
	good := acks[19]
	if good.GetError() != "" || good.GetOffset() != 1 || good.GetEpoch() == "" {
		t.Fatalf("the good stream publish after the bad ones: %v, want offset 1 (nothing bad was appended)", good)
	}
	h := hists[20]
	if h.GetError() != "" || h.GetEpoch() != good.GetEpoch() || h.GetOffset() != 1 || h.GetTruncated() {
		t.Fatalf("history after the good publish: %v", h)
	}
	if m := h.GetMessages(); len(m.GetOffsets()) != 1 || m.GetOffsets()[0] != 1 || string(m.GetIds()) != "good" || string(m.GetData()) != `{"ok":true}` || len(m.GetEpochs()) != 1 || m.GetEpochs()[0] != good.GetEpoch() {
		t.Fatalf("history holds %v, want the good message alone at offset 1", m)
	}
	// The node listens to "s": the good message was delivered to it, with
	// its position, before its ack; nothing else was.
	if len(deliveries) != 1 || string(deliveries[0].GetIds()) != "good" || fmt.Sprint(deliveries[0].GetOffsets()) != "[1]" || deliveries[0].GetEpochs()[0] != good.GetEpoch() {
		t.Fatalf("deliveries %v, want the good message with offset 1", deliveries)
	}
	// The session and the service go on.
	must(t, stream.Send(&pb.NodeFrame{Ops: []*pb.NodeOp{streamPublish(21, "s", "next", `2`, 10, 60000)}}))
	if acks, _, _ := answers(t, stream, 1); acks[21].GetOffset() != 2 {
		t.Fatalf("the next stream publish: %v", acks[21])
	}
}

// TestSessionStreamDataIsKept: what the service keeps of a stream publish
// is the message's own bytes, intact after the frames that came later
// (which gRPC reads into buffers it recycles).
func TestSessionStreamDataIsKept(t *testing.T) {
	svc := svctest.Start(t, "127.0.0.1:0")
	stream := rawSession(t, svc.Addr, "keeper")
	body := func(i int, c byte) string {
		return `"` + strconv.Itoa(i) + strings.Repeat(string(c), 20<<10) + `"`
	}
	const n = 40
	for i := range n {
		// A stream publish, then a frame of other bytes as large.
		must(t, stream.Send(&pb.NodeFrame{Ops: []*pb.NodeOp{streamPublish(uint64(i+1), "kept", fmt.Sprint(i), body(i, 'k'), n, 60000)}}))
		other := body(i, 'o')
		must(t, stream.Send(&pb.NodeFrame{Publishes: &pb.Batch{Topics: []byte("other"), TopicLens: []uint32{5}, Ids: []byte("o"), IdLens: []uint32{1}, Data: []byte(other), DataLens: []uint32{uint32(len(other))}}}))
	}
	must(t, stream.Send(&pb.NodeFrame{Ops: []*pb.NodeOp{historyQuery(1000, "kept", n, n, 60000, nil)}}))
	_, hists, _ := answers(t, stream, n+1)
	h := hists[1000]
	var got []broker.Message
	if h.GetTruncated() {
		t.Logf("the first page holds %d of %d messages", len(h.GetMessages().GetOffsets()), n)
	}
	// Read the pages as a node does.
	for since := uint64(0); ; {
		b := h.GetMessages()
		data, lens := b.GetData(), b.GetDataLens()
		for i, l := range lens {
			got = append(got, broker.Message{ID: fmt.Sprint(b.GetOffsets()[i] - 1), Data: data[:l]})
			data = data[l:]
			since = b.GetOffsets()[i]
		}
		if !h.GetTruncated() {
			break
		}
		must(t, stream.Send(&pb.NodeFrame{Ops: []*pb.NodeOp{historyQuery(2000+since, "kept", n, n, 60000, &pb.StreamPosition{Epoch: h.GetEpoch(), Offset: since})}}))
		_, hs, _ := answers(t, stream, 1)
		h = hs[2000+since]
	}
	if len(got) != n {
		t.Fatalf("history holds %d messages, want %d", len(got), n)
	}
	for i, m := range got {
		if string(m.Data) != body(i, 'k') {
			t.Fatalf("message %d came back as %d different bytes", i, len(m.Data))
		}
	}
}

// TestPushAPIStreams: a backend publishes into a topic's stream (with
// history options, or because the service keeps one) and reads it back,
// and nodes see the offsets.
func TestPushAPIStreams(t *testing.T) {
	svc := svctest.Start(t, "127.0.0.1:0", "-api-token", "api-secret")
	nd := svctest.DialNode(t, svc.Addr, client.Options{})
	ctx := svctest.Ctx(t)
	must(t, nd.Subscribe(ctx, "/chat/room"))
	must(t, nd.Subscribe(ctx, "/plain"))
	api := pushClient(t, svc.Addr)
	authed := withToken(ctx, "api-secret")

	// With history options: appended, with offsets per topic.
	r, err := api.Publish(authed, &pb.PublishRequest{Topics: []string{"/chat/room", "/chat/other"}, Data: `{"n":1}`, Id: "one", HistorySize: 10, HistoryTtlMs: 60000})
	must(t, err)
	epoch := r.GetEpochs()["/chat/room"]
	if r.GetOffsets()["/chat/room"] != 1 || r.GetOffsets()["/chat/other"] != 1 || epoch == "" || r.GetEpochs()["/chat/other"] == epoch || r.GetNodes() != 1 {
		t.Fatalf("Publish with history answered %v", r)
	}
	// Without them: a topic whose stream the service keeps still gets the
	// message appended; another topic gets a plain publish.
	r, err = api.Publish(authed, &pb.PublishRequest{Topics: []string{"/chat/room", "/plain"}, Data: `{"n":2}`, Id: "two"})
	must(t, err)
	if len(r.GetOffsets()) != 1 || r.GetOffsets()["/chat/room"] != 2 || r.GetEpochs()["/chat/room"] != epoch {
		t.Fatalf("Publish without history options answered %v, want /chat/room appended at 2 and /plain plain", r)
	}
	// A node's stream publish goes on from there.
	p, err := nd.PublishStream(ctx, broker.Message{Topic: "/chat/room", ID: "three", Data: []byte(`{"n":3}`)}, broker.StreamOptions{Size: 10, TTL: time.Minute})
	must(t, err)
	if p.Offset != 3 || p.Epoch != epoch {
		t.Fatalf("the node's stream publish got %+v, want offset 3 in %q", p, epoch)
	}
	got := nd.Rec.WaitN(t, 4, 10*time.Second)
	for i, want := range []struct {
		id     string
		offset uint64
	}{{"one", 1}, {"two", 2}, {"two", 0}, {"three", 3}} {
		m := got[i]
		if m.ID != want.id || m.Offset != want.offset || (want.offset != 0) != (m.Epoch == epoch) {
			t.Fatalf("delivery %d: %+v, want %s at offset %d", i, m, want.id, want.offset)
		}
	}

	// History reads what was kept, oldest first.
	h, err := api.History(authed, &pb.HistoryRequest{Topic: "/chat/room", Limit: 10})
	must(t, err)
	if h.GetEpoch() != epoch || h.GetOffset() != 3 || len(h.GetMessages()) != 3 || h.GetTruncated() {
		t.Fatalf("History answered %v", h)
	}
	for i, m := range h.GetMessages() {
		if m.GetOffset() != uint64(i+1) || m.GetData() != fmt.Sprintf(`{"n":%d}`, i+1) || m.GetId() != []string{"one", "two", "three"}[i] {
			t.Fatalf("message %d: %v", i, m)
		}
	}
	h, err = api.History(authed, &pb.HistoryRequest{Topic: "/chat/room", Limit: 10, Since: &pb.StreamPosition{Epoch: epoch, Offset: 1}})
	must(t, err)
	if len(h.GetMessages()) != 2 || h.GetMessages()[0].GetOffset() != 2 {
		t.Fatalf("History since 1: %v", h)
	}
	h, err = api.History(authed, &pb.HistoryRequest{Topic: "/chat/room", Limit: 2})
	must(t, err)
	if len(h.GetMessages()) != 2 || h.GetMessages()[0].GetOffset() != 2 {
		t.Fatalf("History of the newest 2: %v", h)
	}
	h, err = api.History(authed, &pb.HistoryRequest{Topic: "/chat/room"})
	must(t, err)
	if len(h.GetMessages()) != 0 || h.GetOffset() != 3 || h.GetEpoch() != epoch {
		t.Fatalf("History with limit 0, the position only: %v", h)
	}
	// A topic without a stream: an empty answer, and no stream started,
	// so a later publish is still a plain one.
	h, err = api.History(authed, &pb.HistoryRequest{Topic: "/plain", Limit: 10})
	must(t, err)
	if h.GetEpoch() != "" || h.GetOffset() != 0 || len(h.GetMessages()) != 0 || h.GetTopic() != "/plain" {
		t.Fatalf("History of a topic without a stream: %v", h)
	}
	r, err = api.Publish(authed, &pb.PublishRequest{Topic: "/plain", Data: `1`})
	must(t, err)
	if len(r.GetOffsets()) != 0 {
		t.Fatalf("a History call started a stream: the next publish answered %v", r)
	}

	// Refusals: clear, and for History as for Publish.
	_, err = api.History(ctx, &pb.HistoryRequest{Topic: "/chat/room", Limit: 10})
	wantCode(t, err, codes.Unauthenticated, "History without a token")
	_, err = api.History(withToken(ctx, "wrong"), &pb.HistoryRequest{Topic: "/chat/room", Limit: 10})
	wantCode(t, err, codes.Unauthenticated, "History with a wrong token")
	_, err = api.History(withToken(ctx, svctest.Token), &pb.HistoryRequest{Topic: "/chat/room", Limit: 10})
	must(t, err) // the node token calls the push API too
	for what, req := range map[string]*pb.HistoryRequest{
		"no topic":   {Limit: 10},
		"long topic": {Topic: strings.Repeat("t", 257), Limit: 10},
	} {
		_, err := api.History(authed, req)
		wantCode(t, err, codes.InvalidArgument, "History with "+what)
	}
	for what, req := range map[string]*pb.PublishRequest{
		"a size without a TTL":  {Topic: "a", Data: `1`, HistorySize: 10},
		"a TTL without a size":  {Topic: "a", Data: `1`, HistoryTtlMs: 1000},
		"a size over the limit": {Topic: "a", Data: `1`, HistorySize: 1 << 21, HistoryTtlMs: 1000},
	} {
		_, err := api.Publish(authed, req)
		wantCode(t, err, codes.InvalidArgument, "Publish with "+what)
	}
}

// TestHistoryInPages: a history larger than one answer comes in pages,
// which the push API shows and the node's client assembles.
func TestHistoryInPages(t *testing.T) {
	svc := svctest.Start(t, "127.0.0.1:0")
	nd := svctest.DialNode(t, svc.Addr, client.Options{})
	ctx := svctest.Ctx(t)
	opts := broker.StreamOptions{Size: 100, TTL: time.Minute}
	// 300 KiB messages: three fit in a page of 1 MiB.
	const n = 10
	var last broker.StreamPosition
	for i := range n {
		var err error
		last, err = nd.PublishStream(ctx, broker.Message{Topic: "big", ID: fmt.Sprint(i + 1), Data: bigJSON(i + 1)}, opts)
		must(t, err)
	}
	api := pushClient(t, svc.Addr)
	authed := withToken(ctx, svctest.Token)
	var pages []int
	var since *pb.StreamPosition
	var seen []uint64
	for {
		h, err := api.History(authed, &pb.HistoryRequest{Topic: "big", Limit: n, Since: since})
		must(t, err)
		pages = append(pages, len(h.GetMessages()))
		for _, m := range h.GetMessages() {
			seen = append(seen, m.GetOffset())
			if m.GetData() != string(bigJSON(int(m.GetOffset()))) {
				t.Fatalf("message %d came back different", m.GetOffset())
			}
		}
		if !h.GetTruncated() {
			break
		}
		since = &pb.StreamPosition{Epoch: h.GetEpoch(), Offset: seen[len(seen)-1]}
		if len(pages) > n {
			t.Fatal("the pages do not end")
		}
	}
	if fmt.Sprint(pages) != "[3 3 3 1]" || len(seen) != n || seen[n-1] != n {
		t.Fatalf("pages of %v messages, offsets %v; want pages of 3, 3, 3 and 1, offsets 1..%d", pages, seen, n)
	}
	// The node's client reads them whole, as one answer.
	for _, q := range []broker.HistoryQuery{
		{Limit: 100, Options: opts},
		{Limit: 8, Options: opts},
		{Since: &broker.StreamPosition{Epoch: last.Epoch, Offset: 1}, Limit: 100, Options: opts},
		{Since: &broker.StreamPosition{Offset: 2}, Limit: 5, Options: opts},
	} {
		r, err := nd.History(ctx, "big", q)
		must(t, err)
		first, count := uint64(1), n
		switch {
		case q.Since != nil:
			first, count = q.Since.Offset+1, min(q.Limit, n-int(q.Since.Offset))
		case q.Limit < n:
			first, count = uint64(n-q.Limit+1), q.Limit
		}
		if r.Epoch != last.Epoch || r.Offset != n || len(r.Messages) != count {
			t.Fatalf("client History %+v: epoch %q top %d with %d messages; want %q, %d, %d", q, r.Epoch, r.Offset, len(r.Messages), last.Epoch, n, count)
		}
		for i, m := range r.Messages {
			if m.Offset != first+uint64(i) || m.Epoch != last.Epoch || !bytes.Equal(m.Data, bigJSON(int(m.Offset))) {
				t.Fatalf("client History %+v: message %d at offset %d, want %d", q, i, m.Offset, first+uint64(i))
			}
		}
	}
}

// bigJSON is a JSON string of 300 KiB that says i.
func bigJSON(i int) []byte {
	return []byte(`"` + strconv.Itoa(i) + strings.Repeat("h", 300<<10) + `"`)
}

// TestStreamMetrics: the stream figures, exactly, from a service with a
// small memory cap; idle streams go on the service's own timer.
func TestStreamMetrics(t *testing.T) {
	// 10 messages of 10 bytes of data and a 1-byte id cost 10*(11+64).
	const unit = 1 + 10 + 64
	svc := svctest.Start(t, "127.0.0.1:0", "-metrics-listen", "127.0.0.1:0", "-max-stream-bytes", strconv.Itoa(10*unit))
	url := svc.MetricsURL(t)
	must(t, metricsAre(t, url, map[string]float64{
		`firetower_topicsvc_streams`:                              0,
		`firetower_topicsvc_stream_messages`:                      0,
		`firetower_topicsvc_stream_bytes`:                         0,
		`firetower_topicsvc_stream_max_bytes`:                     10 * unit,
		`firetower_topicsvc_streams_evicted_total`:                0,
		`firetower_topicsvc_streams_expired_total`:                0,
		`firetower_topicsvc_stream_messages_trimmed_total`:        0,
		`firetower_topicsvc_history_queries_total{source="node"}`: 0,
		`firetower_topicsvc_history_queries_total{source="api"}`:  0,
	})())
	nd := svctest.DialNode(t, svc.Addr, client.Options{})
	ctx := svctest.Ctx(t)
	long := broker.StreamOptions{Size: 100, TTL: time.Hour}
	publish := func(topic string, count int, opts broker.StreamOptions) {
		for i := range count {
			_, err := nd.PublishStream(ctx, broker.Message{Topic: topic, ID: fmt.Sprint(i % 10), Data: []byte(`"12345678"`)}, opts)
			must(t, err)
		}
	}
	publish("a", 6, long)
	publish("b", 4, long) // 10 messages: at the cap
	must(t, metricsAre(t, url, map[string]float64{
		`firetower_topicsvc_streams`:                                 2,
		`firetower_topicsvc_stream_messages`:                         10,
		`firetower_topicsvc_stream_bytes`:                            10 * unit,
		`firetower_topicsvc_messages_published_total{source="node"}`: 10,
		`firetower_topicsvc_streams_evicted_total`:                   0,
	})())
	publish("b", 1, long) // over: a, the least recently published, goes
	must(t, metricsAre(t, url, map[string]float64{
		`firetower_topicsvc_streams`:               1,
		`firetower_topicsvc_stream_messages`:       5,
		`firetower_topicsvc_streams_evicted_total`: 1,
	})())
	publish("b", 8, long) // b alone over the cap: its oldest go
	must(t, metricsAre(t, url, map[string]float64{
		`firetower_topicsvc_streams`:                       1,
		`firetower_topicsvc_stream_messages`:               10,
		`firetower_topicsvc_stream_bytes`:                  10 * unit,
		`firetower_topicsvc_stream_messages_trimmed_total`: 3,
		`firetower_topicsvc_streams_evicted_total`:         1,
	})())
	_, err := nd.History(ctx, "b", broker.HistoryQuery{Limit: 10, Options: long})
	must(t, err)
	_, err = pushClient(t, svc.Addr).History(withToken(ctx, svctest.Token), &pb.HistoryRequest{Topic: "b", Limit: 10})
	must(t, err)
	// A stream with a short TTL (b, full, is then the least recently
	// published, and goes for it), then nothing: the service's sweep
	// timer forgets it once its TTL passed, with no publish to trigger
	// the Core's own sweep.
	publish("short", 1, broker.StreamOptions{Size: 10, TTL: 100 * time.Millisecond})
	brokertest.Eventually(t, 5*time.Second, metricsAre(t, url, map[string]float64{
		`firetower_topicsvc_streams`:                              0,
		`firetower_topicsvc_stream_messages`:                      0,
		`firetower_topicsvc_stream_bytes`:                         0,
		`firetower_topicsvc_streams_evicted_total`:                2,
		`firetower_topicsvc_streams_expired_total`:                1,
		`firetower_topicsvc_history_queries_total{source="node"}`: 1,
		`firetower_topicsvc_history_queries_total{source="api"}`:  1,
		`firetower_topicsvc_api_calls_total{method="History"}`:    1,
	}))
}

// TestBinaryStreamFlag: the memory cap must be positive.
func TestBinaryStreamFlag(t *testing.T) {
	for _, v := range []string{"0", "-5"} {
		out, err := exec.Command(svctest.Bin(), "-listen", "127.0.0.1:0", "-token", svctest.Token, "-max-stream-bytes", v).CombinedOutput()
		var exit *exec.ExitError
		if !errors.As(err, &exit) || !strings.Contains(string(out), "-max-stream-bytes must be positive") {
			t.Fatalf("-max-stream-bytes %s: err %v, output %q", v, err, out)
		}
	}
}

// TestHistoryPagesFitTheMessageLimit: with a largest message smaller than
// a page, the pages shrink to it, so that an answer never exceeds what
// the service may send; the session survives a read of a long history.
func TestHistoryPagesFitTheMessageLimit(t *testing.T) {
	svc := svctest.Start(t, "127.0.0.1:0", "-max-message-size", "1024")
	nd := svctest.DialNode(t, svc.Addr, client.Options{})
	ctx := svctest.Ctx(t)
	opts := broker.StreamOptions{Size: 1000, TTL: time.Minute}
	data := []byte(`"` + strings.Repeat("d", 900) + `"`)
	const n = 300 // 270 KB of data: far over 1 KiB + the 64 KiB of overhead
	for i := range n {
		_, err := nd.PublishStream(ctx, broker.Message{Topic: "many", ID: fmt.Sprint(i), Data: data}, opts)
		must(t, err)
	}
	r, err := nd.History(ctx, "many", broker.HistoryQuery{Limit: n, Options: opts})
	must(t, err)
	if len(r.Messages) != n || r.Messages[0].Offset != 1 || r.Messages[n-1].Offset != n {
		t.Fatalf("history of %d messages: %d, from %d", n, len(r.Messages), firstOf(r.Messages))
	}
	h, err := pushClient(t, svc.Addr).History(withToken(ctx, svctest.Token), &pb.HistoryRequest{Topic: "many", Limit: n})
	must(t, err)
	if len(h.GetMessages()) != 1 || !h.GetTruncated() {
		t.Fatalf("push API page under a 1 KiB message limit: %d messages, truncated %v; want one, truncated", len(h.GetMessages()), h.GetTruncated())
	}
	if strings.Contains(svc.Logs(), "node disconnected") || !nd.Connected() {
		t.Fatalf("the node lost its session reading history:\n%s", svc.Logs())
	}
}

func firstOf(ms []broker.Message) uint64 {
	if len(ms) == 0 {
		return 0
	}
	return ms[0].Offset
}
