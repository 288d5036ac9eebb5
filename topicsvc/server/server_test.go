package server_test

import (
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/OSMeteor/firetower/broker"
	"github.com/OSMeteor/firetower/topicsvc/client"
	"github.com/OSMeteor/firetower/topicsvc/internal/svctest"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	rpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
)

// TestReflection: the service describes itself to tools such as grpcurl,
// behind the same token as the push API.
func TestReflection(t *testing.T) {
	svc := svctest.Start(t, "127.0.0.1:0")
	conn, err := grpc.NewClient(svc.Addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	must(t, err)
	defer conn.Close()
	list := func(token string) ([]string, error) {
		ctx := svctest.Ctx(t)
		if token != "" {
			ctx = withToken(ctx, token)
		}
		stream, err := rpb.NewServerReflectionClient(conn).ServerReflectionInfo(ctx)
		if err != nil {
			return nil, err
		}
		// A refused stream may already be closed when the request goes
		// out: Send then says io.EOF, and Recv gives the status.
		if err := stream.Send(&rpb.ServerReflectionRequest{MessageRequest: &rpb.ServerReflectionRequest_ListServices{}}); err != nil && !errors.Is(err, io.EOF) {
			return nil, err
		}
		resp, err := stream.Recv()
		if err != nil {
			return nil, err
		}
		var names []string
		for _, s := range resp.GetListServicesResponse().GetService() {
			names = append(names, s.GetName())
		}
		return names, nil
	}
	_, err = list("")
	wantCode(t, err, codes.Unauthenticated, "reflection without a token")
	names, err := list(svctest.Token)
	must(t, err)
	found := false
	for _, n := range names {
		found = found || n == "firetower.topicsvc.v1.TopicService"
	}
	if !found {
		t.Fatalf("reflection lists %v, want firetower.topicsvc.v1.TopicService", names)
	}
}

// TestGarbageOnServicePort writes junk to the service's port: connected
// nodes do not notice.
func TestGarbageOnServicePort(t *testing.T) {
	svc := svctest.Start(t, "127.0.0.1:0")
	a := svctest.DialNode(t, svc.Addr, client.Options{})
	b := svctest.DialNode(t, svc.Addr, client.Options{})
	ctx := svctest.Ctx(t)
	must(t, a.Subscribe(ctx, "g"))
	must(t, b.Publish(ctx, broker.Message{Topic: "g", ID: "0", Data: []byte("0")}))
	a.Rec.WaitN(t, 1, 10*time.Second)

	rnd := rand.New(rand.NewPCG(5, 6))
	junk := make([]byte, 64<<10)
	for i := range junk {
		junk[i] = byte(rnd.UintN(256))
	}
	payloads := [][]byte{
		junk,
		[]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
		// A valid HTTP/2 preface, then a frame header announcing 16 MiB.
		append([]byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"), 0xff, 0xff, 0xff, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01),
		append([]byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"), junk[:4096]...),
		{},
	}
	for _, p := range payloads {
		conn, err := net.Dial("tcp", svc.Addr)
		must(t, err)
		conn.SetDeadline(time.Now().Add(2 * time.Second))
		conn.Write(p)
		conn.Read(make([]byte, 1024))
		conn.Close()
	}
	for i := 1; i <= 50; i++ {
		must(t, b.Publish(ctx, broker.Message{Topic: "g", ID: fmt.Sprint(i), Data: []byte("1")}))
	}
	got := a.Rec.WaitN(t, 51, 10*time.Second)
	for i, m := range got {
		if m.ID != fmt.Sprint(i) {
			t.Fatalf("message %d has id %s", i, m.ID)
		}
	}
	if strings.Contains(svc.Logs(), "node disconnected") {
		t.Fatalf("a node was disconnected:\n%s", svc.Logs())
	}
	if !a.Connected() || !b.Connected() {
		t.Fatal("a node lost its session")
	}
}

// TestBinary checks the command's own behaviour: a token is required, and
// SIGTERM stops it gracefully.
func TestBinary(t *testing.T) {
	out, err := exec.Command(svctest.Bin(), "-listen", "127.0.0.1:0").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "token is required") {
		t.Fatalf("without a token: err %v, output %q", err, out)
	}
	svc := svctest.Start(t, "127.0.0.1:0")
	nd := svctest.DialNode(t, svc.Addr, client.Options{})
	must(t, nd.Subscribe(svctest.Ctx(t), "x"))
	must(t, svc.Cmd.Process.Signal(os.Interrupt))
	select {
	case <-svc.Exited():
	case <-time.After(10 * time.Second):
		t.Fatal("the service did not stop on SIGINT")
	}
	if code := svc.Cmd.ProcessState.ExitCode(); code != 0 {
		t.Fatalf("exit code %d after SIGINT:\n%s", code, svc.Logs())
	}
	if !strings.Contains(svc.Logs(), "topic service stopped") {
		t.Fatalf("no stop logged:\n%s", svc.Logs())
	}
}
