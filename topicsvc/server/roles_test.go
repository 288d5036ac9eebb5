package server_test

import (
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/OSMeteor/firetower/broker/brokertest"
	"github.com/OSMeteor/firetower/topicsvc/client"
	"github.com/OSMeteor/firetower/topicsvc/internal/svctest"
	pb "github.com/OSMeteor/firetower/topicsvc/topicsvcpb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	rpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
)

const backendToken = "backend-token"

// session opens a raw node session with token and sends hello for id,
// returning the stream and the error of the service's first answer.
func session(t *testing.T, api pb.TopicServiceClient, token, id string) (pb.TopicService_SessionClient, error) {
	t.Helper()
	stream, err := api.Session(withToken(svctest.Ctx(t), token))
	must(t, err)
	if err := stream.Send(&pb.NodeFrame{Ops: []*pb.NodeOp{{Op: &pb.NodeOp_Hello{Hello: &pb.Hello{NodeId: id}}}}}); err != nil && !errors.Is(err, io.EOF) {
		t.Fatal(err)
	}
	_, err = stream.Recv()
	return stream, err
}

// TestTokenPerRole: the API token pushes, counts and lists, but cannot
// open a node session; the node token does both.
func TestTokenPerRole(t *testing.T) {
	svc := svctest.Start(t, "127.0.0.1:0", "-api-token", backendToken)
	nd := svctest.DialNode(t, svc.Addr, client.Options{})
	ctx := svctest.Ctx(t)
	must(t, nd.Subscribe(ctx, "/t"))
	nd.SetCount("/t", 1)
	api := pushClient(t, svc.Addr)
	backend := withToken(ctx, backendToken)

	_, err := api.Publish(backend, &pb.PublishRequest{Topic: "/t", Data: `"from a backend"`})
	must(t, err)
	nd.Rec.WaitN(t, 1, 5*time.Second)
	brokertest.Eventually(t, 5*time.Second, func() error {
		c, err := api.Count(backend, &pb.CountRequest{Topic: "/t"})
		if err != nil || c.GetCount() != 1 {
			return fmt.Errorf("Count with the API token = %v, %v", c, err)
		}
		return nil
	})
	if tcs, err := listTopics(backend, api); err != nil || len(tcs) != 1 {
		t.Fatalf("Topics with the API token = %v, %v", tcs, err)
	}
	if _, err := listNodes(backend, api); err != nil {
		t.Fatal(err)
	}
	// The node token calls the push API too.
	_, err = api.Publish(withToken(ctx, svctest.Token), &pb.PublishRequest{Topic: "/t", Data: `2`})
	must(t, err)

	_, err = session(t, api, backendToken, "impostor")
	wantCode(t, err, codes.PermissionDenied, "a session with the API token")
	if _, err := client.Dial(svc.Addr, client.Options{Token: backendToken}); err == nil || !strings.Contains(err.Error(), "refused the token") {
		t.Fatalf("Dial with the API token: %v, want it refused", err)
	}
	nd.Rec.WaitN(t, 2, 5*time.Second)
}

// TestLiveNodeIDRefused: a session for the id of a live node is refused;
// the node keeps its session. After a break, the node's id is free again.
func TestLiveNodeIDRefused(t *testing.T) {
	svc := svctest.Start(t, "127.0.0.1:0")
	nd := svctest.DialNode(t, svc.Addr, client.Options{NodeID: "gateway-1"})
	ctx := svctest.Ctx(t)
	must(t, nd.Subscribe(ctx, "/live"))
	api := pushClient(t, svc.Addr)
	for range 3 {
		_, err := session(t, api, svctest.Token, "gateway-1")
		wantCode(t, err, codes.AlreadyExists, "a session for a live node id")
	}
	_, err := api.Publish(withToken(ctx, svctest.Token), &pb.PublishRequest{Topic: "/live", Data: `1`})
	must(t, err)
	nd.Rec.WaitN(t, 1, 5*time.Second)
	if strings.Contains(svc.Logs(), "replaced") {
		t.Fatalf("the live node was replaced:\n%s", svc.Logs())
	}

	// A node whose old session went silent (its connection broke without
	// the service noticing) gets its id back within half the heartbeat
	// timeout: the quick reconnect is not refused for ever.
	stale, err := session(t, api, svctest.Token, "gateway-2")
	must(t, err)
	_ = stale // sends nothing more, as a broken connection would
	start := time.Now()
	for {
		_, err := session(t, api, svctest.Token, "gateway-2")
		if err == nil {
			break
		}
		wantCode(t, err, codes.AlreadyExists, "a reconnect while the old session is live")
		if time.Since(start) > 4*time.Second {
			t.Fatal("the silent session's id was not freed within 4 s")
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("reconnect accepted %v after the old session went silent", time.Since(start).Round(time.Millisecond))
}

// TestNodeBounds: a node's counts stay within 0..1<<24, and a node
// listens to at most -max-node-topics topics.
func TestNodeBounds(t *testing.T) {
	svc := svctest.Start(t, "127.0.0.1:0", "-max-node-topics", "3")
	api := pushClient(t, svc.Addr)
	ctx := withToken(svctest.Ctx(t), svctest.Token)
	stream, err := session(t, api, svctest.Token, "greedy")
	must(t, err)
	var ops []*pb.NodeOp
	for i := range 4 {
		ops = append(ops, &pb.NodeOp{Op: &pb.NodeOp_Subscribe{Subscribe: &pb.Subscribe{Seq: uint64(i + 1), Topic: fmt.Sprint("/s", i)}}})
	}
	// Counts out of range, and one for a topic the node does not
	// subscribe to, are refused; a count at the bound is taken.
	ops = append(ops, &pb.NodeOp{Op: &pb.NodeOp_Count{Count: &pb.CountUpdate{Counts: []*pb.TopicCount{
		{Topic: "/s0", Count: 1 << 31}, {Topic: "/s1", Count: -5}, {Topic: "/s2", Count: 1 << 24}, {Topic: "/elsewhere", Count: 7},
	}}}})
	must(t, stream.Send(&pb.NodeFrame{Ops: ops}))
	var acks []string
	for len(acks) < 4 {
		f, err := stream.Recv()
		must(t, err)
		for _, o := range f.GetOps() {
			if a := o.GetAck(); a != nil {
				acks = append(acks, a.GetError())
			}
		}
	}
	if acks[0] != "" || acks[2] != "" || !strings.Contains(acks[3], "limit is 3") {
		t.Fatalf("acks %q: want the 4th subscribe refused at the limit of 3", acks)
	}
	brokertest.Eventually(t, 5*time.Second, func() error {
		for topic, want := range map[string]int64{"/s0": 0, "/s1": 0, "/s2": 1 << 24, "/elsewhere": 0} {
			c, err := api.Count(ctx, &pb.CountRequest{Topic: topic})
			if err != nil {
				return err
			}
			if c.GetCount() != want {
				return fmt.Errorf("Count(%s) = %d, want %d", topic, c.GetCount(), want)
			}
		}
		return nil
	})
}

// TestUnauthenticatedConnectionsEnd: a connection that never speaks
// HTTP/2, one that never calls, and a session that never says hello are
// closed within their deadlines; the connected node does not notice.
func TestUnauthenticatedConnectionsEnd(t *testing.T) {
	svc := svctest.Start(t, "127.0.0.1:0", "-hello-timeout", "1s", "-idle-timeout", "2s")
	nd := svctest.DialNode(t, svc.Addr, client.Options{})
	ctx := svctest.Ctx(t)
	must(t, nd.Subscribe(ctx, "/idle"))

	closedWithin := func(what string, c net.Conn, limit time.Duration) {
		t.Helper()
		start := time.Now()
		must(t, c.SetReadDeadline(time.Now().Add(limit+3*time.Second)))
		buf := make([]byte, 4096)
		for {
			if _, err := c.Read(buf); err != nil {
				var ne net.Error
				if errors.As(err, &ne) && ne.Timeout() {
					t.Fatalf("%s: still open after %v", what, time.Since(start))
				}
				break
			}
		}
		t.Logf("%s: closed after %v", what, time.Since(start).Round(10*time.Millisecond))
	}
	silent, err := net.Dial("tcp", svc.Addr)
	must(t, err)
	defer silent.Close()
	closedWithin("a connection that sends nothing", silent, time.Second)

	preface, err := net.Dial("tcp", svc.Addr)
	must(t, err)
	defer preface.Close()
	// The HTTP/2 client preface and an empty SETTINGS frame, then nothing.
	_, err = preface.Write(append([]byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"), 0, 0, 0, 4, 0, 0, 0, 0, 0))
	must(t, err)
	// The service says GOAWAY once the connection has been idle for the
	// idle timeout (gRPC then closes it a minute later at most, even if
	// the peer ignores it).
	start := time.Now()
	must(t, preface.SetReadDeadline(time.Now().Add(5*time.Second)))
	goaway := false
	for !goaway {
		var h [9]byte
		if _, err := io.ReadFull(preface, h[:]); err != nil {
			break // closed: as good
		}
		n := int(h[0])<<16 | int(h[1])<<8 | int(h[2])
		if _, err := io.ReadFull(preface, make([]byte, n)); err != nil {
			t.Fatalf("reading a frame: %v", err)
		}
		goaway = h[3] == 0x7
	}
	if d := time.Since(start); d > 4*time.Second || d < time.Second {
		t.Fatalf("an HTTP/2 connection that never calls: GOAWAY after %v, want about 2s", d)
	}
	t.Logf("an HTTP/2 connection that never calls: GOAWAY after %v", time.Since(start).Round(10*time.Millisecond))

	api := pushClient(t, svc.Addr)
	stream, err := api.Session(withToken(ctx, svctest.Token))
	must(t, err)
	start = time.Now()
	_, err = stream.Recv()
	wantCode(t, err, codes.DeadlineExceeded, "a session without hello")
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("the session without hello lasted %v", d)
	}

	_, err = api.Publish(withToken(ctx, svctest.Token), &pb.PublishRequest{Topic: "/idle", Data: `1`})
	must(t, err)
	nd.Rec.WaitN(t, 1, 5*time.Second)
	if !nd.Connected() || strings.Count(svc.Logs(), "node connected") != 1 {
		t.Fatalf("the node lost its session:\n%s", svc.Logs())
	}
}

// TestRefusalsLogBounded: a flood of refused calls writes a summary line
// per interval with counts, not a line per call; refused reflection is
// not called a refused node.
func TestRefusalsLogBounded(t *testing.T) {
	svc := svctest.Start(t, "127.0.0.1:0", "-log-interval", "1s")
	api := pushClient(t, svc.Addr)
	ctx := svctest.Ctx(t)
	conn, err := grpc.NewClient(svc.Addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	must(t, err)
	defer conn.Close()
	const n = 300
	for i := range n {
		_, err := api.Publish(withToken(ctx, "wrong"), &pb.PublishRequest{Topic: "/x", Data: `1`})
		wantCode(t, err, codes.Unauthenticated, "Publish with a wrong token")
		if i%10 == 0 {
			stream, err := rpb.NewServerReflectionClient(conn).ServerReflectionInfo(ctx)
			must(t, err)
			_, err = stream.Recv()
			wantCode(t, err, codes.Unauthenticated, "reflection without a token")
		}
	}
	brokertest.Eventually(t, 5*time.Second, func() error {
		if !strings.Contains(svc.Logs(), "push_auth") || total(svc.Logs(), "push_auth=") != n {
			return fmt.Errorf("the summaries count %d refused push calls, want %d:\n%s", total(svc.Logs(), "push_auth="), n, svc.Logs())
		}
		return nil
	})
	logs := svc.Logs()
	if lines := strings.Count(logs, "topic service refused requests"); lines > 4 {
		t.Fatalf("%d summary lines for %d refusals:\n%s", lines, n, logs)
	}
	if strings.Contains(logs, "node refused") || strings.Contains(logs, "node_auth") {
		t.Fatalf("refused reflection logged as a refused node:\n%s", logs)
	}
	if total(logs, "reflection_auth=") != n/10 {
		t.Fatalf("reflection refusals counted %d, want %d:\n%s", total(logs, "reflection_auth="), n/10, logs)
	}
}

// total adds up the numbers after key in logs.
func total(logs, key string) int {
	sum := 0
	for _, part := range strings.Split(logs, key)[1:] {
		var v int
		fmt.Sscanf(part, "%d", &v)
		sum += v
	}
	return sum
}
