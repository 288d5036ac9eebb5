// Package presencetest checks presence, join and leave across two real
// nodes of one cluster: real gin engines over httptest, real WebSocket
// clients, REST over HTTP. The node tests of every broker run it.
package presencetest

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/OSMeteor/firetower"
	"github.com/OSMeteor/firetower/internal/wstest"
	"github.com/gin-gonic/gin"
)

// Token is the REST token of the nodes Run makes.
const Token = "presence-token"

// Grace is the PresenceGrace of the nodes Run makes.
const Grace = 500 * time.Millisecond

// Run starts two nodes with newTower, which adds the broker to cfg (the
// same cluster for both), and runs the checks. Topics starting "room" have
// presence with join and leave.
func Run(t *testing.T, newTower func(t *testing.T, cfg firetower.Config) *firetower.Tower) {
	gin.SetMode(gin.TestMode)
	cfg := firetower.Config{
		APIToken:      Token,
		PresenceGrace: Grace,
		Authenticate: func(c *gin.Context) (string, error) {
			if err := firetower.SetConnInfo(c, map[string]string{"name": strings.ToUpper(c.Query("user"))}); err != nil {
				return "", err
			}
			return c.Query("user"), nil
		},
		TopicOptions: func(topic string) firetower.TopicOptions {
			return firetower.TopicOptions{JoinLeave: strings.HasPrefix(topic, "room")}
		},
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

	bob := b.dial("bob")
	bob.subscribe("room")
	bob.Want(`{"type":"join","topic":"room","user":"bob","info":{"name":"BOB"}}`)
	alice := a.dial("alice")
	alice.subscribe("room")
	join := `{"type":"join","topic":"room","user":"alice","info":{"name":"ALICE"}}`
	bob.Want(join)
	alice.Want(join)

	// Presence merged across the nodes, from either, over WebSocket and
	// REST.
	want := []string{`alice {"name":"ALICE"}`, `bob {"name":"BOB"}`}
	for _, c := range []*client{alice, bob} {
		if p := c.presence("room"); p.Users != 2 || p.Connections != 2 || !slices.Equal(p.keys(), want) {
			t.Fatalf("presence frame %+v, want alice and bob", p)
		}
	}
	if p := b.restPresence("room"); p.Users != 2 || p.Connections != 2 || !slices.Equal(p.keys(), want) {
		t.Fatalf("REST presence %+v, want alice and bob", p)
	}

	// Alice reloads her page and comes back on the other node within the
	// grace: no leave, no join.
	alice.WS.Close()
	alice = b.dial("alice")
	alice.subscribe("room")
	alice.Quiet(3 * Grace)
	bob.Quiet(Grace)
	if p := bob.presence("room"); p.Users != 2 || p.Connections != 2 {
		t.Fatalf("after the reload: %+v", p)
	}

	// A second connection of bob's, on the other node, then his first
	// one goes: still no event.
	bob2 := a.dial("bob")
	bob2.subscribe("room")
	bob.WS.Close()
	bob2.Quiet(3 * Grace)

	// Alice goes for good: one leave, after the grace, on both nodes.
	start := time.Now()
	alice.WS.Close()
	bob2.Want(`{"type":"leave","topic":"room","user":"alice"}`)
	if waited := time.Since(start); waited < Grace {
		t.Fatalf("leave %v after the last connection went, before the grace of %v", waited, Grace)
	}
	if p := a.restPresence("room"); p.Users != 1 || p.Connections != 1 || !slices.Equal(p.keys(), []string{`bob {"name":"BOB"}`}) {
		t.Fatalf("after alice left: %+v", p)
	}
	bob2.Quiet(Grace)
}

type node struct {
	t     *testing.T
	tower *firetower.Tower
	url   string
}

func (n *node) dial(user string) *client {
	n.t.Helper()
	return &client{Client: wstest.Dial(n.t, "ws"+strings.TrimPrefix(n.url, "http")+"/ws?user="+user), t: n.t}
}

// client is a connection with the frames this package sends.
type client struct {
	*wstest.Client
	t *testing.T
}

func (n *node) restPresence(topic string) answer {
	n.t.Helper()
	req, _ := http.NewRequest(http.MethodGet, n.url+"/topics/"+topic+"/presence", nil)
	req.Header.Set("Authorization", "Bearer "+Token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		n.t.Fatal(err)
	}
	defer resp.Body.Close()
	var p answer
	if err := json.NewDecoder(resp.Body).Decode(&p); err != nil || resp.StatusCode != http.StatusOK {
		n.t.Fatalf("REST presence: %d, %v", resp.StatusCode, err)
	}
	return p
}

// answer is a presence answer, decoded.
type answer struct {
	Users       int `json:"users"`
	Connections int `json:"connections"`
	Clients     []struct {
		User string          `json:"user"`
		Info json.RawMessage `json:"info"`
	} `json:"clients"`
}

func (p answer) keys() []string {
	var out []string
	for _, c := range p.Clients {
		out = append(out, c.User+" "+string(c.Info))
	}
	slices.Sort(out)
	return out
}

func (c *client) subscribe(topic string) {
	c.t.Helper()
	c.Send(fmt.Sprintf(`{"type":"subscribe","topic":%q}`, topic))
	if got := c.Next(); !strings.HasPrefix(got, `{"type":"subscribed"`) {
		c.t.Fatalf("got %s, want subscribed", got)
	}
}

func (c *client) presence(topic string) answer {
	c.t.Helper()
	c.Send(fmt.Sprintf(`{"type":"presence","topic":%q,"id":"p"}`, topic))
	got := c.Next()
	if !strings.HasPrefix(got, fmt.Sprintf(`{"type":"presence","topic":%q,"id":"p",`, topic)) {
		c.t.Fatalf("got %s, want a presence answer", got)
	}
	var p answer
	if err := json.Unmarshal([]byte(got), &p); err != nil {
		c.t.Fatal(err)
	}
	return p
}
