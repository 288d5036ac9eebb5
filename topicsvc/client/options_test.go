package client_test

import (
	"strings"
	"testing"
	"time"

	"github.com/OSMeteor/firetower/topicsvc/client"
	"github.com/OSMeteor/firetower/topicsvc/internal/svctest"
)

// TestOptionsRefuseNegatives: a negative size or duration is an error from
// Dial, not a silent default; zero is the default.
func TestOptionsRefuseNegatives(t *testing.T) {
	for name, opts := range map[string]client.Options{
		"QueueSize":          {QueueSize: -1},
		"ConnectTimeout":     {ConnectTimeout: -time.Second},
		"HeartbeatInterval":  {HeartbeatInterval: -time.Second},
		"HeartbeatTimeout":   {HeartbeatTimeout: -time.Second},
		"CountFlushInterval": {CountFlushInterval: -time.Millisecond},
		"MinBackoff":         {MinBackoff: -time.Millisecond},
		"MaxBackoff":         {MaxBackoff: -time.Second},
	} {
		opts.Token = svctest.Token
		c, err := client.Dial("127.0.0.1:1", opts)
		if err == nil {
			c.Close()
			t.Errorf("Dial with a negative %s succeeded", name)
			continue
		}
		if !strings.Contains(err.Error(), "Options."+name) || !strings.Contains(err.Error(), "negative") {
			t.Errorf("Dial with a negative %s: %v, want an error that names the field", name, err)
		}
	}

	// Zero values are the defaults: the client works against a service.
	svc := svctest.Start(t, "127.0.0.1:0")
	nd := svctest.DialNode(t, svc.Addr, client.Options{})
	must(t, nd.Subscribe(svctest.Ctx(t), "zero"))
	if !nd.Connected() || nd.NodeID() == "" {
		t.Fatalf("with zero Options: connected %v, node id %q", nd.Connected(), nd.NodeID())
	}
}

func TestOptionsNeedAToken(t *testing.T) {
	_, err := client.Dial("127.0.0.1:1", client.Options{})
	if err == nil || !strings.Contains(err.Error(), "token is required") {
		t.Fatalf("Dial without a token: %v", err)
	}
}
