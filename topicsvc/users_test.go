package topicsvc_test

import (
	"errors"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/OSMeteor/firetower"
	"github.com/OSMeteor/firetower/internal/userstest"
	"github.com/OSMeteor/firetower/topicsvc/internal/svctest"
	pb "github.com/OSMeteor/firetower/topicsvc/topicsvcpb"
	"github.com/gin-gonic/gin"
	"github.com/gorilla/websocket"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
)

// TestUsersOnService: push to a user, disconnect a user and
// MaxConnsPerUser across two nodes of a standalone topic service process.
func TestUsersOnService(t *testing.T) {
	svc := svctest.Start(t, "127.0.0.1:0")
	userstest.Run(t, func(t *testing.T, cfg firetower.Config) *firetower.Tower {
		cfg.BrokerURL = "topicsvc://" + svc.Addr
		cfg.BrokerToken = svctest.Token
		tw, err := firetower.New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { tw.Shutdown(t.Context()) })
		return tw
	})
}

// TestPushAPIToUser: a backend of the push API reaches a user by
// publishing to firetower.UserTopic(id): a message frame; with an id
// that starts "firetower disconnect " and the reason as data, the user's
// connections close with 4001. Count of that topic counts them.
func TestPushAPIToUser(t *testing.T) {
	svc := svctest.Start(t, "127.0.0.1:0")
	tw, err := firetower.New(firetower.Config{
		BrokerURL:    "topicsvc://" + svc.Addr,
		BrokerToken:  svctest.Token,
		Authenticate: func(c *gin.Context) (string, error) { return c.Query("user"), nil },
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tw.Shutdown(t.Context()) })
	r := gin.New()
	r.Use(tw.Middleware())
	srv := httptest.NewServer(r)
	t.Cleanup(srv.Close)
	ws, _, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(srv.URL, "http")+"/ws?user=alice", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()

	conn, err := grpc.NewClient(svc.Addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	api := pb.NewTopicServiceClient(conn)
	ctx := metadata.AppendToOutgoingContext(svctest.Ctx(t), "authorization", "Bearer "+svctest.Token)
	topic := firetower.UserTopic("alice")
	deadline := time.Now().Add(5 * time.Second)
	for {
		n, err := api.Count(ctx, &pb.CountRequest{Topic: topic})
		if err != nil {
			t.Fatal(err)
		}
		if n.GetCount() == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("count of %q: %d", topic, n.GetCount())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if _, err := api.Publish(ctx, &pb.PublishRequest{Topic: topic, Data: `{"text":"hi"}`, Id: "m1"}); err != nil {
		t.Fatal(err)
	}
	ws.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, b, err := ws.ReadMessage()
	if err != nil || string(b) != `{"type":"message","data":{"text":"hi"},"id":"m1"}` {
		t.Fatalf("got %s, %v", b, err)
	}
	if _, err := api.Publish(ctx, &pb.PublishRequest{Topic: topic, Data: `"bye"`, Id: "firetower disconnect 1"}); err != nil {
		t.Fatal(err)
	}
	_, _, err = ws.ReadMessage()
	var ce *websocket.CloseError
	if !errors.As(err, &ce) || ce.Code != firetower.CloseUserDisconnected || ce.Text != "bye" {
		t.Fatalf("closed with %v, want 4001 bye", err)
	}
}
