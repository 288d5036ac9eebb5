package server_test

import (
	"net"
	"strings"
	"testing"
	"time"

	"github.com/OSMeteor/firetower/topicsvc"
	"github.com/OSMeteor/firetower/topicsvc/client"
	"github.com/OSMeteor/firetower/topicsvc/internal/svctest"
	"github.com/OSMeteor/firetower/topicsvc/server"
)

// TestConfigRefusesNegatives: a negative size or duration is an error from
// New, not a silent default; zero is the default.
func TestConfigRefusesNegatives(t *testing.T) {
	for name, cfg := range map[string]server.Config{
		"HeartbeatTimeout":  {HeartbeatTimeout: -time.Second},
		"HeartbeatInterval": {HeartbeatInterval: -time.Second},
		"QueueSize":         {QueueSize: -1},
		"QueueBytes":        {QueueBytes: -1},
		"MaxMessageSize":    {MaxMessageSize: -1},
		"MaxPublishTopics":  {MaxPublishTopics: -1},
		"MaxStreamBytes":    {MaxStreamBytes: -1},
	} {
		cfg.Token = svctest.Token
		if _, err := server.New(cfg); err == nil || !strings.Contains(err.Error(), "Config."+name) || !strings.Contains(err.Error(), "negative") {
			t.Errorf("New with a negative %s: %v, want an error that names the field", name, err)
		}
	}
	if _, err := server.New(server.Config{}); err == nil || !strings.Contains(err.Error(), "Token is required") {
		t.Errorf("New without a token: %v", err)
	}

	// MaxStreamBytes sets the cap of the Core served; zero leaves it.
	core := topicsvc.NewCore()
	_, err := server.New(server.Config{Token: svctest.Token, Core: core, MaxStreamBytes: 12345})
	must(t, err)
	if got := core.StreamStats().MaxBytes; got != 12345 {
		t.Errorf("the Core's stream cap is %d after New with MaxStreamBytes 12345", got)
	}
	_, err = server.New(server.Config{Token: svctest.Token, Core: core})
	must(t, err)
	if got := core.StreamStats().MaxBytes; got != 12345 {
		t.Errorf("New without MaxStreamBytes changed the Core's stream cap to %d", got)
	}

	// Zero values are the defaults: a node works against the server.
	srv, err := server.New(server.Config{Token: svctest.Token})
	must(t, err)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	must(t, err)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(l) }()
	nd := svctest.DialNode(t, l.Addr().String(), client.Options{})
	must(t, nd.Subscribe(svctest.Ctx(t), "zero"))
	must(t, nd.Close())
	srv.Stop()
	<-served
}
