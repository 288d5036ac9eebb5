package server_test

import (
	"context"
	"errors"
	"io"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/OSMeteor/firetower/broker"
	"github.com/OSMeteor/firetower/broker/brokertest"
	"github.com/OSMeteor/firetower/topicsvc/client"
	"github.com/OSMeteor/firetower/topicsvc/internal/svctest"
	pb "github.com/OSMeteor/firetower/topicsvc/topicsvcpb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// pushClient is a plain gRPC client, as a backend in any language would use.
func pushClient(t *testing.T, addr string) pb.TopicServiceClient {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallSendMsgSize(64<<20)))
	must(t, err)
	t.Cleanup(func() { conn.Close() })
	return pb.NewTopicServiceClient(conn)
}

func withToken(ctx context.Context, token string) context.Context {
	return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+token)
}

// listTopics reads the Topics stream whole, sorted by topic.
func listTopics(ctx context.Context, api pb.TopicServiceClient) ([]*pb.TopicCount, error) {
	stream, err := api.Topics(ctx, &pb.TopicsRequest{})
	if err != nil {
		return nil, err
	}
	var out []*pb.TopicCount
	for {
		r, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			sort.Slice(out, func(i, j int) bool { return out[i].GetTopic() < out[j].GetTopic() })
			return out, nil
		}
		if err != nil {
			return nil, err
		}
		out = append(out, r.GetTopics()...)
	}
}

// listNodes reads the Nodes stream whole.
func listNodes(ctx context.Context, api pb.TopicServiceClient) ([]*pb.NodeInfo, error) {
	stream, err := api.Nodes(ctx, &pb.NodesRequest{})
	if err != nil {
		return nil, err
	}
	var out []*pb.NodeInfo
	for {
		r, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, err
		}
		out = append(out, r.GetNodes()...)
	}
}

func wantCode(t *testing.T, err error, code codes.Code, what string) {
	t.Helper()
	if status.Code(err) != code {
		t.Fatalf("%s: %v, want %v", what, err, code)
	}
	if code != codes.OK && status.Convert(err).Message() == "" {
		t.Fatalf("%s: no message in %v", what, err)
	}
}

func TestPushAPI(t *testing.T) {
	svc := svctest.Start(t, "127.0.0.1:0")
	nd := svctest.DialNode(t, svc.Addr, client.Options{})
	other := svctest.DialNode(t, svc.Addr, client.Options{})
	ctx := svctest.Ctx(t)
	must(t, nd.Subscribe(ctx, "/chat/world"))
	must(t, nd.Subscribe(ctx, "/chat/other"))
	must(t, other.Subscribe(ctx, "/chat/world"))
	must(t, other.Subscribe(ctx, "/chat/other"))
	nd.SetCount("/chat/world", 2)
	other.SetCount("/chat/world", 1)
	other.SetCount("/chat/other", 5)
	api := pushClient(t, svc.Addr)
	authed := withToken(ctx, svctest.Token)

	// Without a token, or with a wrong one, every call is refused.
	_, err := api.Publish(ctx, &pb.PublishRequest{Topic: "/chat/world", Data: `1`})
	wantCode(t, err, codes.Unauthenticated, "Publish without a token")
	_, err = api.Count(withToken(ctx, "wrong"), &pb.CountRequest{Topic: "/chat/world"})
	wantCode(t, err, codes.Unauthenticated, "Count with a wrong token")
	_, err = listTopics(ctx, api)
	wantCode(t, err, codes.Unauthenticated, "Topics without a token")
	stream, err := api.Session(ctx)
	if err == nil {
		_, err = stream.Recv()
	}
	wantCode(t, err, codes.Unauthenticated, "Session without a token")

	r, err := api.Publish(authed, &pb.PublishRequest{Topic: "/chat/world", Data: `{"text":"from a backend","n":12345678901234567890}`})
	must(t, err)
	if r.GetId() == "" || len(r.GetTopics()) != 1 || r.GetNodes() != 2 {
		t.Fatalf("Publish answered %v", r)
	}
	got := nd.Rec.WaitN(t, 1, 10*time.Second)
	if m := got[0]; m.ID != r.GetId() || m.Topic != "/chat/world" || string(m.Data) != `{"text":"from a backend","n":12345678901234567890}` {
		t.Fatalf("node got %+v", m)
	}
	r, err = api.Publish(authed, &pb.PublishRequest{Topics: []string{"/chat/world", "/chat/other", "/chat/world"}, Data: `"both"`, Id: "my-id"})
	must(t, err)
	if r.GetId() != "my-id" || strings.Join(r.GetTopics(), ",") != "/chat/world,/chat/other" {
		t.Fatalf("Publish to several topics answered %v", r)
	}
	got = nd.Rec.WaitN(t, 3, 10*time.Second)
	for _, m := range got[1:] {
		if m.ID != "my-id" || string(m.Data) != `"both"` {
			t.Fatalf("node got %+v", m)
		}
	}

	brokertest.Eventually(t, 10*time.Second, func() error {
		c, err := api.Count(authed, &pb.CountRequest{Topic: "/chat/world"})
		if err != nil {
			return err
		}
		if c.GetCount() != 3 {
			return status.Errorf(codes.Unknown, "Count = %d, want 3", c.GetCount())
		}
		return nil
	})
	c, err := api.Count(authed, &pb.CountRequest{Topic: "/nobody/here"})
	must(t, err)
	if c.GetCount() != 0 {
		t.Fatalf("unknown topic counts %d", c.GetCount())
	}
	// other's count of /chat/other may come one flush after its count of
	// /chat/world, which the wait above saw.
	brokertest.Eventually(t, 10*time.Second, func() error {
		tcs, err := listTopics(authed, api)
		if err != nil {
			return err
		}
		if len(tcs) != 2 || tcs[0].GetTopic() != "/chat/other" || tcs[0].GetCount() != 5 || tcs[1].GetCount() != 3 {
			return status.Errorf(codes.Unknown, "Topics = %v", tcs)
		}
		return nil
	})
	nodes, err := listNodes(authed, api)
	must(t, err)
	if len(nodes) != 2 {
		t.Fatalf("Nodes = %v", nodes)
	}

	// Invalid input gets a clear InvalidArgument, and the service goes on.
	for what, req := range map[string]*pb.PublishRequest{
		"no topic":        {Data: `1`},
		"empty topic":     {Topics: []string{""}, Data: `1`},
		"long topic":      {Topic: strings.Repeat("t", 257), Data: `1`},
		"not JSON":        {Topic: "a", Data: `{"text":`},
		"empty data":      {Topic: "a"},
		"data too large":  {Topic: "a", Data: `"` + strings.Repeat("x", 4<<20) + `"`},
		"id too long":     {Topic: "a", Data: `1`, Id: strings.Repeat("i", 300)},
		"too many topics": {Topics: make([]string, 2000), Data: `1`},
	} {
		_, err := api.Publish(authed, req)
		wantCode(t, err, codes.InvalidArgument, "Publish with "+what)
	}
	_, err = api.Count(authed, &pb.CountRequest{})
	wantCode(t, err, codes.InvalidArgument, "Count without a topic")
	// Beyond the gRPC message limit.
	_, err = api.Publish(authed, &pb.PublishRequest{Topic: "a", Data: `"` + strings.Repeat("x", 8<<20) + `"`})
	wantCode(t, err, codes.ResourceExhausted, "Publish of 8 MiB")

	// A 1 MiB JSON payload passes.
	big := `"` + strings.Repeat("y", 1<<20) + `"`
	_, err = api.Publish(authed, &pb.PublishRequest{Topic: "/chat/world", Data: big})
	must(t, err)
	got = nd.Rec.WaitN(t, 4, 5*time.Second)
	if string(got[3].Data) != big {
		t.Fatalf("1 MiB payload arrived as %d bytes", len(got[3].Data))
	}

	// A session that does not start with hello is refused.
	stream, err = api.Session(authed)
	must(t, err)
	must(t, stream.Send(&pb.NodeFrame{Ops: []*pb.NodeOp{{Op: &pb.NodeOp_Heartbeat{Heartbeat: &pb.Heartbeat{}}}}}))
	_, err = stream.Recv()
	wantCode(t, err, codes.InvalidArgument, "Session without hello")

	// The nodes were not disturbed.
	must(t, other.Publish(ctx, broker.Message{Topic: "/chat/other", ID: "last", Data: []byte(`1`)}))
	got = nd.Rec.WaitN(t, 5, 10*time.Second)
	if got[4].ID != "last" {
		t.Fatalf("last message %+v", got[4])
	}
}
