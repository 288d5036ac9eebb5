package server_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/OSMeteor/firetower/broker"
	"github.com/OSMeteor/firetower/broker/brokertest"
	"github.com/OSMeteor/firetower/topicsvc/internal/svctest"
	pb "github.com/OSMeteor/firetower/topicsvc/topicsvcpb"
	"google.golang.org/grpc/codes"
)

func presenceAdd(seq uint64, conn, user, info string, graceMs uint64, topics ...string) *pb.NodeOp {
	return &pb.NodeOp{Op: &pb.NodeOp_PresenceAdd{PresenceAdd: &pb.PresenceAdd{
		Seq: seq, Client: &pb.PresenceClient{Conn: conn, User: user, Info: info}, Topics: topics, JoinLeave: true, GraceMs: graceMs,
	}}}
}

func presenceRemove(seq uint64, conn string, graceMs uint64, topics ...string) *pb.NodeOp {
	return &pb.NodeOp{Op: &pb.NodeOp_PresenceRemove{PresenceRemove: &pb.PresenceRemove{Seq: seq, Conn: conn, Topics: topics, JoinLeave: true, GraceMs: graceMs}}}
}

func presenceQuery(seq uint64, topic string, limit uint32) *pb.NodeOp {
	return &pb.NodeOp{Op: &pb.NodeOp_PresenceQuery{PresenceQuery: &pb.PresenceQuery{Seq: seq, Topic: topic, Limit: limit}}}
}

// presenceAnswers reads the session until want answers (acks and presence
// results, by seq) arrived, with the deliveries read meanwhile.
func presenceAnswers(t *testing.T, stream pb.TopicService_SessionClient, want int) (map[uint64]*pb.Ack, map[uint64]*pb.PresenceResult, []*pb.Batch) {
	t.Helper()
	acks, res := map[uint64]*pb.Ack{}, map[uint64]*pb.PresenceResult{}
	var deliveries []*pb.Batch
	for len(acks)+len(res) < want {
		f, err := stream.Recv()
		must(t, err)
		for _, o := range f.GetOps() {
			if a := o.GetAck(); a != nil {
				acks[a.GetSeq()] = a
			}
			if p := o.GetPresence(); p != nil {
				res[p.GetSeq()] = p
			}
		}
		if b := f.GetDeliveries(); b != nil {
			deliveries = append(deliveries, b)
		}
	}
	return acks, res, deliveries
}

// TestSessionPresence speaks the session protocol directly: invalid
// presence operations are refused one by one with a clear error and
// record nothing; the valid ones are applied, their joins and leaves
// delivered to the node (which listens to the topic) before their acks,
// and the session goes on.
func TestSessionPresence(t *testing.T) {
	svc := svctest.Start(t, "127.0.0.1:0", "-metrics-listen", "127.0.0.1:0")
	stream := rawSession(t, svc.Addr, "raw")
	many := make([]string, 1025)
	for i := range many {
		many[i] = fmt.Sprint("t", i)
	}
	long := strings.Repeat("x", 300)
	bad := map[uint64]struct {
		op   *pb.NodeOp
		want string
	}{
		2:  {presenceAdd(2, "c1", "alice", "", 0), "no topic"},
		3:  {presenceAdd(3, "c1", "alice", "", 0, many...), "1025 topics in one operation, the limit is 1024"},
		4:  {presenceAdd(4, "c1", "alice", "", 0, "room", long), "topic of 300 bytes"},
		5:  {presenceAdd(5, "", "alice", "", 0, "room"), "empty connection id"},
		6:  {presenceAdd(6, "c1", long, "", 0, "room"), "user id of 300 bytes"},
		7:  {presenceAdd(7, "c1", "alice", `[1]`, 0, "room"), "must be a JSON object"},
		8:  {presenceAdd(8, "c1", "alice", `{"a":"`+strings.Repeat("y", 1100)+`"}`, 0, "room"), "the limit is 1024"},
		9:  {presenceAdd(9, "c1", "alice", "", 60001, "room"), "grace of 60001 ms, the limit is 60000"},
		10: {presenceRemove(10, "", 0, "room"), "empty connection id"},
		11: {presenceRemove(11, "c1", 0, many...), "the limit is 1024"},
		12: {presenceQuery(12, "room", 10001), "presence limit 10001, the most one answer lists is 10000"},
		13: {presenceQuery(13, "", 10), "empty topic"},
	}
	ops := []*pb.NodeOp{{Op: &pb.NodeOp_Subscribe{Subscribe: &pb.Subscribe{Seq: 1, Topic: "room"}}}}
	for seq := uint64(2); seq <= 13; seq++ {
		ops = append(ops, bad[seq].op)
	}
	ops = append(ops,
		presenceAdd(14, "c1", "alice", `{"name": "Alice"}`, 0, "room"),
		presenceAdd(15, "c2", "alice", "", 0, "room"),
		presenceAdd(16, "c3", "", "", 0, "room"),
		presenceQuery(17, "room", 10),
		presenceRemove(18, "c1", 0, "room"),
		presenceRemove(19, "c2", 0, "room"),
		presenceQuery(20, "room", 0),
	)
	must(t, stream.Send(&pb.NodeFrame{Ops: ops}))
	acks, res, deliveries := presenceAnswers(t, stream, 20)
	for seq, b := range bad {
		got := acks[seq].GetError()
		if r := res[seq]; r != nil {
			got = r.GetError()
		}
		if !strings.Contains(got, b.want) {
			t.Errorf("op %d: refused with %q, want an error that says %q", seq, got, b.want)
		}
	}
	for _, seq := range []uint64{14, 15, 16, 18, 19} {
		if a := acks[seq]; a == nil || a.GetError() != "" {
			t.Fatalf("op %d: %v, want an ack without error", seq, a)
		}
	}
	r := res[17]
	if r.GetError() != "" || r.GetUsers() != 1 || r.GetConnections() != 3 || len(r.GetClients()) != 3 || r.GetTruncated() {
		t.Fatalf("presence of room: %v, want 1 user, 3 connections, all listed", r)
	}
	for _, c := range r.GetClients() {
		if c.GetConn() == "c1" && c.GetInfo() != `{"name":"Alice"}` {
			t.Fatalf("c1's info %q, want it compacted", c.GetInfo())
		}
	}
	if r := res[20]; r.GetUsers() != 0 || r.GetConnections() != 1 || len(r.GetClients()) != 0 {
		t.Fatalf("presence after the removes: %v, want the anonymous connection, counted only", r)
	}
	// One join (her first connection), one leave (her last), nothing for
	// the refused ops or the anonymous connection.
	var ids []string
	for _, b := range deliveries {
		lens := b.GetIdLens()
		rest := b.GetIds()
		for _, l := range lens {
			ids = append(ids, string(rest[:l]))
			rest = rest[l:]
		}
	}
	if strings.Join(ids, ",") != broker.JoinID+","+broker.LeaveID {
		t.Fatalf("deliveries %q, want one join and one leave", ids)
	}
	brokertest.Eventually(t, 5*time.Second, metricsAre(t, svc.MetricsURL(t), map[string]float64{
		`firetower_topicsvc_presence_entries`:                      1,
		`firetower_topicsvc_presence_topics`:                       1,
		`firetower_topicsvc_presence_pending_leaves`:               0,
		`firetower_topicsvc_presence_events_total{kind="join"}`:    1,
		`firetower_topicsvc_presence_events_total{kind="leave"}`:   1,
		`firetower_topicsvc_presence_operations_total`:             5,
		`firetower_topicsvc_presence_queries_total{source="node"}`: 2,
		`firetower_topicsvc_presence_queries_total{source="api"}`:  0,
	}))
}

// TestPushAPIPresence: a backend reads a topic's presence with the API
// token; a limit over the cap is INVALID_ARGUMENT.
func TestPushAPIPresence(t *testing.T) {
	const apiToken = "backend-secret-0123"
	svc := svctest.Start(t, "127.0.0.1:0", "-api-token", apiToken)
	stream := rawSession(t, svc.Addr, "raw")
	must(t, stream.Send(&pb.NodeFrame{Ops: []*pb.NodeOp{
		presenceAdd(1, "c1", "alice", `{"n":1}`, 0, "room"),
		presenceAdd(2, "c2", "bob", "", 0, "room"),
	}}))
	presenceAnswers(t, stream, 2)
	api := pushClient(t, svc.Addr)
	ctx := withToken(svctest.Ctx(t), apiToken)
	r, err := api.Presence(ctx, &pb.PresenceRequest{Topic: "room", Limit: 1})
	must(t, err)
	if r.GetTopic() != "room" || r.GetUsers() != 2 || r.GetConnections() != 2 || len(r.GetClients()) != 1 {
		t.Fatalf("Presence(room, 1) = %v", r)
	}
	r, err = api.Presence(ctx, &pb.PresenceRequest{Topic: "nobody", Limit: 10})
	must(t, err)
	if r.GetUsers() != 0 || r.GetConnections() != 0 || len(r.GetClients()) != 0 {
		t.Fatalf("Presence(nobody) = %v", r)
	}
	_, err = api.Presence(ctx, &pb.PresenceRequest{Topic: "room", Limit: 10001})
	wantCode(t, err, codes.InvalidArgument, "Presence with limit 10001")
	_, err = api.Presence(ctx, &pb.PresenceRequest{Topic: ""})
	wantCode(t, err, codes.InvalidArgument, "Presence of an empty topic")
	_, err = api.Presence(withToken(svctest.Ctx(t), "wrong"), &pb.PresenceRequest{Topic: "room"})
	wantCode(t, err, codes.Unauthenticated, "Presence with a wrong token")
}
