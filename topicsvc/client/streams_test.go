package client_test

import (
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/OSMeteor/firetower/broker"
	"github.com/OSMeteor/firetower/broker/brokertest"
	"github.com/OSMeteor/firetower/topicsvc/client"
	"github.com/OSMeteor/firetower/topicsvc/internal/svctest"
	pb "github.com/OSMeteor/firetower/topicsvc/topicsvcpb"
	"google.golang.org/grpc"
)

var streamOpts = broker.StreamOptions{Size: 100, TTL: time.Minute}

// TestStreamsWhileServiceDown: with the service gone, PublishStream and
// History fail at once with broker.ErrUnavailable; once it is back they
// work again, in new epochs (a new service is a new Core).
func TestStreamsWhileServiceDown(t *testing.T) {
	svc := svctest.Start(t, "127.0.0.1:0")
	nd := svctest.DialNode(t, svc.Addr, client.Options{})
	ctx := svctest.Ctx(t)
	before, err := nd.PublishStream(ctx, broker.Message{Topic: "s", ID: "1", Data: []byte(`1`)}, streamOpts)
	must(t, err)
	svc.Kill()
	brokertest.Eventually(t, 10*time.Second, func() error {
		if nd.Connected() {
			return errors.New("the node still has a session")
		}
		return nil
	})
	for range 50 {
		start := time.Now()
		_, err := nd.PublishStream(ctx, broker.Message{Topic: "s", ID: "2", Data: []byte(`2`)}, streamOpts)
		if !errors.Is(err, broker.ErrUnavailable) {
			t.Fatalf("PublishStream while down: %v, want ErrUnavailable", err)
		}
		_, err = nd.History(ctx, "s", broker.HistoryQuery{Limit: 10, Options: streamOpts})
		if !errors.Is(err, broker.ErrUnavailable) {
			t.Fatalf("History while down: %v, want ErrUnavailable", err)
		}
		if d := time.Since(start); d > time.Second {
			t.Fatalf("PublishStream and History while down took %v, want them to fail fast", d)
		}
	}
	svctest.Start(t, svc.Addr)
	var after broker.StreamPosition
	brokertest.Eventually(t, 15*time.Second, func() error {
		after, err = nd.PublishStream(ctx, broker.Message{Topic: "s", ID: "3", Data: []byte(`3`)}, streamOpts)
		return err
	})
	if after.Epoch == before.Epoch || after.Offset != 1 {
		t.Fatalf("after the restart the stream goes on at %d in %q (was %q)", after.Offset, after.Epoch, before.Epoch)
	}
	r, err := nd.History(ctx, "s", broker.HistoryQuery{Limit: 10, Options: streamOpts})
	must(t, err)
	if len(r.Messages) != 1 || r.Messages[0].ID != "3" {
		t.Fatalf("history after the restart: %+v", r)
	}
}

// TestStreamsRefused: what cannot travel is refused with a clear error, by
// the client before anything is sent (topics, ids, options), or by the
// service (data that is not JSON).
func TestStreamsRefused(t *testing.T) {
	svc := svctest.Start(t, "127.0.0.1:0")
	nd := svctest.DialNode(t, svc.Addr, client.Options{})
	ctx := svctest.Ctx(t)
	for what, tc := range map[string]struct {
		m    broker.Message
		opts broker.StreamOptions
		want string
	}{
		"an empty topic": {broker.Message{ID: "1", Data: []byte(`1`)}, streamOpts, "empty topic"},
		"a long topic":   {broker.Message{Topic: strings.Repeat("t", 257), Data: []byte(`1`)}, streamOpts, "topic of 257 bytes"},
		"a huge size":    {broker.Message{Topic: "t", Data: []byte(`1`)}, broker.StreamOptions{Size: 1 << 30, TTL: time.Minute}, "history size"},
		"a TTL of ages":  {broker.Message{Topic: "t", Data: []byte(`1`)}, broker.StreamOptions{Size: 10, TTL: 1 << 62}, "history TTL"},
		"data not JSON":  {broker.Message{Topic: "t", Data: []byte(`nope`)}, streamOpts, "JSON"},
		"too long an id": {broker.Message{Topic: "t", ID: strings.Repeat("i", 300), Data: []byte(`1`)}, streamOpts, "message id"},
	} {
		if _, err := nd.PublishStream(ctx, tc.m, tc.opts); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("PublishStream with %s: %v, want an error that says %q", what, err, tc.want)
		}
	}
	if _, err := nd.History(ctx, "", broker.HistoryQuery{Limit: 1, Options: streamOpts}); err == nil || !strings.Contains(err.Error(), "empty topic") {
		t.Errorf("History of an empty topic: %v", err)
	}
	// Size and TTL below the smallest are read as the smallest, as the
	// embedded broker reads them: one message for a millisecond.
	p, err := nd.PublishStream(ctx, broker.Message{Topic: "tiny", ID: "1", Data: []byte(`1`)}, broker.StreamOptions{})
	must(t, err)
	if p.Offset != 1 {
		t.Fatalf("a publish with zero options: %+v", p)
	}
}

// oldService answers sessions as a service from before streams does: a
// welcome without streams, and nothing for the operations it does not
// know.
type oldService struct {
	pb.UnimplementedTopicServiceServer
}

func (oldService) Session(stream pb.TopicService_SessionServer) error {
	if _, err := stream.Recv(); err != nil {
		return err
	}
	if err := stream.Send(&pb.ServiceFrame{Ops: []*pb.ServiceOp{{Op: &pb.ServiceOp_Welcome{Welcome: &pb.Welcome{MaxMessageSize: 1 << 20}}}}}); err != nil {
		return err
	}
	for {
		if _, err := stream.Recv(); err != nil {
			return nil
		}
	}
}

// TestStreamsAgainstAnOldService: a service that keeps no streams would
// ignore a stream publish; the client says so at once instead of waiting.
func TestStreamsAgainstAnOldService(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	must(t, err)
	srv := grpc.NewServer()
	pb.RegisterTopicServiceServer(srv, oldService{})
	go srv.Serve(l)
	defer srv.Stop()
	nd := svctest.DialNode(t, l.Addr().String(), client.Options{})
	brokertest.Eventually(t, 10*time.Second, func() error {
		if !nd.Connected() {
			return errors.New("no session with the old service")
		}
		return nil
	})
	ctx := svctest.Ctx(t)
	start := time.Now()
	_, err = nd.PublishStream(ctx, broker.Message{Topic: "t", ID: "1", Data: []byte(`1`)}, streamOpts)
	if !errors.Is(err, errors.ErrUnsupported) || !strings.Contains(err.Error(), "keeps no streams") {
		t.Fatalf("PublishStream to an old service: %v, want a clear ErrUnsupported", err)
	}
	_, err = nd.History(ctx, "t", broker.HistoryQuery{Limit: 1, Options: streamOpts})
	if !errors.Is(err, errors.ErrUnsupported) {
		t.Fatalf("History from an old service: %v, want ErrUnsupported", err)
	}
	if d := time.Since(start); d > time.Second {
		t.Fatalf("the refusals took %v, want them at once", d)
	}
}

// TestConcurrentLargeStreamPublishes: large stream publishes queued
// together travel in frames of their own, each under the service's
// receive limit, so none ends the session.
func TestConcurrentLargeStreamPublishes(t *testing.T) {
	svc := svctest.Start(t, "127.0.0.1:0")
	nd := svctest.DialNode(t, svc.Addr, client.Options{})
	ctx := svctest.Ctx(t)
	data := []byte(`"` + strings.Repeat("L", 1<<20) + `"`)
	const workers, each = 6, 3
	errs := make(chan error, workers*each)
	for range workers {
		go func() {
			for range each {
				_, err := nd.PublishStream(ctx, broker.Message{Topic: "large", ID: "x", Data: data}, streamOpts)
				errs <- err
			}
		}()
	}
	for range workers * each {
		must(t, <-errs)
	}
	r, err := nd.History(ctx, "large", broker.HistoryQuery{Limit: 100, Options: streamOpts})
	must(t, err)
	if r.Offset != workers*each || len(r.Messages) != workers*each {
		t.Fatalf("history: top %d, %d messages; want %d", r.Offset, len(r.Messages), workers*each)
	}
	if st := nd.Stats(); st.SessionsLost != 0 {
		t.Fatalf("the session was lost %d times: %s", st.SessionsLost, st.LastError)
	}
}
