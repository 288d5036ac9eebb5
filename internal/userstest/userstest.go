// Package userstest checks user-addressed delivery, the disconnect of a
// user and MaxConnsPerUser across two real nodes of one cluster: real gin
// engines over httptest, real WebSocket clients, REST over HTTP. The node
// tests of every broker run it.
package userstest

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/OSMeteor/firetower"
	"github.com/OSMeteor/firetower/internal/wstest"
	"github.com/gin-gonic/gin"
	"github.com/gorilla/websocket"
)

// Token is the REST token of the nodes Run makes.
const Token = "users-token"

// MaxConns is the MaxConnsPerUser of the nodes Run makes.
const MaxConns = 3

// Run starts two nodes with newTower, which adds the broker to cfg (the
// same cluster for both), and runs the checks.
func Run(t *testing.T, newTower func(t *testing.T, cfg firetower.Config) *firetower.Tower) {
	gin.SetMode(gin.TestMode)
	cfg := firetower.Config{
		APIToken: Token,
		Authenticate: func(c *gin.Context) (string, error) {
			return c.Query("user"), nil
		},
		MaxConnsPerUser: MaxConns,
	}
	var nodes [2]*node
	for i := range nodes {
		tw := newTower(t, cfg)
		r := gin.New()
		r.Use(tw.Middleware())
		srv := httptest.NewServer(r)
		t.Cleanup(srv.Close)
		nodes[i] = &node{t: t, tower: tw, url: srv.URL}
	}
	a, b := nodes[0], nodes[1]
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	alice1 := a.dial("alice")
	alice2 := b.dial("alice")
	bob := b.dial("bob")
	anon := a.dial("")
	// Counts travel to other nodes within a second on a remote broker.
	a.waitCount(ctx, "alice", 2)
	b.waitCount(ctx, "bob", 1)

	id, err := a.tower.PublishToUser(ctx, "alice", "hi")
	if err != nil {
		t.Fatal(err)
	}
	want := `{"type":"message","data":"hi","id":"` + id + `"}`
	for _, c := range []*wstest.Client{alice1, alice2} {
		if got := c.Next(); got != want {
			t.Fatalf("alice got %s, want %s", got, want)
		}
	}

	status, answer := b.post("/publish", `{"users":["alice","bob","alice"],"data":{"n":1}}`)
	if status != http.StatusOK {
		t.Fatalf("REST publish to users: %d %v", status, answer)
	}
	if answer["connections"] != float64(3) || !sameList(answer["users"], "alice", "bob") {
		t.Fatalf("REST publish to users answered %v, want 3 connections of alice and bob", answer)
	}
	want = `{"type":"message","data":{"n":1},"id":"` + answer["id"].(string) + `"}`
	for _, c := range []*wstest.Client{alice1, alice2, bob} {
		if got := c.Next(); got != want {
			t.Fatalf("got %s, want %s", got, want)
		}
	}

	// MaxConnsPerUser, cluster-wide: a third connection, then a fourth
	// on the other node is refused.
	alice3 := a.dial("alice")
	b.waitCount(ctx, "alice", MaxConns)
	if status, body := b.refusedDial("alice"); status != http.StatusTooManyRequests || !strings.Contains(body, `"error"`) {
		t.Fatalf("connection over MaxConnsPerUser: %d %s, want 429 with a JSON error", status, body)
	}

	// Disconnect, from the other node.
	status, answer = b.post("/disconnect", `{"user":"alice","reason":"bye"}`)
	if status != http.StatusOK || answer["connections"] != float64(MaxConns) || answer["user"] != "alice" {
		t.Fatalf("REST disconnect: %d %v", status, answer)
	}
	for _, c := range []*wstest.Client{alice1, alice2, alice3} {
		err := c.Closed()
		var ce *websocket.CloseError
		if !errors.As(err, &ce) || ce.Code != firetower.CloseUserDisconnected || ce.Text != "bye" {
			t.Fatalf("alice's connection ended with %v, want close 4001 bye", err)
		}
	}
	bob.Ping()
	anon.Ping()
	a.waitCount(ctx, "alice", 0)
	// DisconnectUser on the Go API, for bob, from the first node.
	if n, err := a.tower.DisconnectUser(ctx, "bob", "gone"); err != nil || n != 1 {
		t.Fatalf("DisconnectUser: %d, %v", n, err)
	}
	var ce *websocket.CloseError
	if err := bob.Closed(); !errors.As(err, &ce) || ce.Code != firetower.CloseUserDisconnected {
		t.Fatalf("bob's connection ended with %v, want 4001", err)
	}
	anon.Ping()
	// The user can come back.
	again := b.dial("alice")
	a.waitCount(ctx, "alice", 1)
	if _, err := a.tower.PublishToUser(ctx, "alice", 2); err != nil {
		t.Fatal(err)
	}
	if got := again.Next(); !strings.HasPrefix(got, `{"type":"message","data":2,`) {
		t.Fatalf("got %s", got)
	}
	// Internal topics are never listed.
	for _, n := range nodes {
		page, err := n.tower.Topics(ctx, firetower.TopicsQuery{})
		if err != nil {
			t.Fatal(err)
		}
		for _, tc := range page.Topics {
			if strings.HasPrefix(tc.Topic, firetower.InternalTopicPrefix) {
				t.Fatalf("Topics lists %q", tc.Topic)
			}
		}
	}
}

type node struct {
	t     *testing.T
	tower *firetower.Tower
	url   string
}

func (n *node) wsURL(user string) string {
	u := "ws" + strings.TrimPrefix(n.url, "http") + "/ws"
	if user != "" {
		u += "?user=" + user
	}
	return u
}

func (n *node) dial(user string) *wstest.Client {
	n.t.Helper()
	return wstest.Dial(n.t, n.wsURL(user))
}

// refusedDial dials a connection that must be refused, and returns the
// status and body of the answer.
func (n *node) refusedDial(user string) (int, string) {
	n.t.Helper()
	ws, resp, err := websocket.DefaultDialer.Dial(n.wsURL(user), nil)
	if err == nil {
		ws.Close()
		n.t.Fatalf("dial as %q: accepted", user)
	}
	if resp == nil {
		n.t.Fatalf("dial as %q: %v", user, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// waitCount waits until the node counts n connections of user.
func (n *node) waitCount(ctx context.Context, user string, want int) {
	n.t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		got, err := n.tower.Broker().Count(ctx, firetower.UserTopic(user))
		if err == nil && got == want {
			return
		}
		if time.Now().After(deadline) {
			n.t.Fatalf("user %q: count %d (%v), want %d", user, got, err, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (n *node) post(path, body string) (int, map[string]any) {
	n.t.Helper()
	req, _ := http.NewRequest(http.MethodPost, n.url+path, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+Token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		n.t.Fatal(err)
	}
	defer resp.Body.Close()
	var m map[string]any
	b, _ := io.ReadAll(resp.Body)
	if err := json.Unmarshal(b, &m); err != nil {
		n.t.Fatalf("POST %s: %d %q is not JSON", path, resp.StatusCode, b)
	}
	return resp.StatusCode, m
}

func sameList(v any, want ...string) bool {
	list, ok := v.([]any)
	if !ok || len(list) != len(want) {
		return false
	}
	for i, w := range want {
		if list[i] != w {
			return false
		}
	}
	return true
}
