package main

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"time"

	"github.com/OSMeteor/firetower"
	"github.com/centrifugal/centrifuge"
	"github.com/gin-gonic/gin"
)

// The servers of the presence and users scenarios. Every connection names
// its user in the query (?user=u12); the server gives it that user id and
// the info {"name":"Name u12"} (about 20 bytes), as an app's authentication
// would. usersMode says what channel t0 keeps:
//
//	users      user ids only: no presence (the baseline, and users1k)
//	presence   presence of every topic
//	joinleave  presence and join/leave frames to every subscriber

// connInfoOf is the info every target gives a connection of user u.
func connInfoOf(u string) []byte { return []byte(`{"name":"Name ` + u + `"}`) }

// firetowerUsersServer is firetowerServer with Config.Authenticate (the
// user from the query, SetConnInfo) and, for presence, TopicOptions.
func firetowerUsersServer(brokerURL, mode string) (http.Handler, func(), error) {
	gin.SetMode(gin.ReleaseMode)
	cfg := firetower.Config{
		APIToken:                benchToken,
		InsecureSkipOriginCheck: true,
		BrokerURL:               brokerURL,
		BrokerToken:             benchToken,
		Authenticate: func(c *gin.Context) (string, error) {
			u := c.Query("user")
			if u == "" {
				return "", nil
			}
			if err := firetower.SetConnInfo(c, json.RawMessage(connInfoOf(u))); err != nil {
				return "", err
			}
			return u, nil
		},
	}
	var opts firetower.TopicOptions
	switch mode {
	case "presence":
		opts.Presence = true
	case "joinleave":
		opts.Presence, opts.JoinLeave = true, true
	}
	if opts.Presence {
		cfg.TopicOptions = func(string) firetower.TopicOptions { return opts }
	}
	tower, err := firetower.New(cfg)
	if err != nil {
		return nil, nil, err
	}
	r := gin.New()
	r.Use(tower.Middleware())
	stop := func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = tower.Shutdown(ctx)
	}
	return r, stop, nil
}

// usersPublishReq is POST /publish of the Centrifuge users server: a topic,
// or users (firetower's body, {"users":["u1",…],"data":…}).
type usersPublishReq struct {
	Topic string          `json:"topic"`
	Users []string        `json:"users"`
	Data  json.RawMessage `json:"data"`
}

// centrifugeUsersServer is centrifugeServer with the user from the query
// (centrifuge.SetCredentials in an HTTP middleware, as its examples do),
// every connection subscribed server-side to its personal channel "#user"
// (ConnectReply.Subscriptions), the subscribe options of the mode
// (EmitPresence; EmitJoinLeave and PushJoinLeave), the client presence
// command answered from the node's presence (OnPresence), and two HTTP
// routes: GET /bench/presence?channel=t0 (node.Presence, encoded as the
// client presence reply is) and POST /publish, which with "users" calls
// node.Publish("#"+user, data) for each: the library has no call that
// publishes to many channels at once.
func centrifugeUsersServer(mode string) (http.Handler, func(), error) {
	var cfg centrifuge.Config
	if mode == "presence" {
		// A client presence reply of 10,000 clients is 1.4 MB: with the
		// default queue of 1 MiB, Centrifuge closes the asking client
		// (3008, slow) instead of sending it.
		cfg.ClientQueueMaxSize = 4 << 20
	}
	node, err := centrifuge.New(cfg)
	if err != nil {
		return nil, nil, err
	}
	var subOpts centrifuge.SubscribeOptions
	switch mode {
	case "presence":
		subOpts.EmitPresence = true
	case "joinleave":
		subOpts.EmitPresence, subOpts.EmitJoinLeave, subOpts.PushJoinLeave = true, true, true
	}
	node.OnConnecting(func(ctx context.Context, _ centrifuge.ConnectEvent) (centrifuge.ConnectReply, error) {
		var reply centrifuge.ConnectReply
		cred, ok := centrifuge.GetCredentials(ctx)
		if !ok {
			reply.Credentials = &centrifuge.Credentials{UserID: ""}
			return reply, nil
		}
		if cred.UserID != "" {
			reply.Subscriptions = map[string]centrifuge.SubscribeOptions{"#" + cred.UserID: {}}
		}
		return reply, nil
	})
	node.OnConnect(func(c *centrifuge.Client) {
		c.OnSubscribe(func(_ centrifuge.SubscribeEvent, cb centrifuge.SubscribeCallback) {
			cb(centrifuge.SubscribeReply{Options: subOpts}, nil)
		})
		c.OnPresence(func(_ centrifuge.PresenceEvent, cb centrifuge.PresenceCallback) {
			cb(centrifuge.PresenceReply{}, nil)
		})
	})
	if err := node.Run(); err != nil {
		return nil, nil, err
	}
	ws := centrifuge.NewWebsocketHandler(node, centrifuge.WebsocketConfig{
		CheckOrigin: func(*http.Request) bool { return true },
	})
	mux := http.NewServeMux()
	mux.Handle("/ws", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if u := r.URL.Query().Get("user"); u != "" {
			r = r.WithContext(centrifuge.SetCredentials(r.Context(), &centrifuge.Credentials{UserID: u, Info: connInfoOf(u)}))
		}
		ws.ServeHTTP(w, r)
	}))
	mux.HandleFunc("/bench/presence", func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer "+benchToken {
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
		res, err := node.Presence(r.URL.Query().Get("channel"))
		if err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		type info struct {
			User     string          `json:"user"`
			Client   string          `json:"client"`
			ConnInfo json.RawMessage `json:"conn_info,omitempty"`
		}
		out := struct {
			Presence map[string]info `json:"presence"`
		}{Presence: make(map[string]info, len(res.Presence))}
		for k, v := range res.Presence {
			out.Presence[k] = info{User: v.UserID, Client: v.ClientID, ConnInfo: v.ConnInfo}
		}
		b, _ := json.Marshal(out)
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(b)
	})
	mux.HandleFunc("/publish", func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost || r.Header.Get("Authorization") != "Bearer "+benchToken {
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
		var p usersPublishReq
		body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
		if err != nil || json.Unmarshal(body, &p) != nil || (p.Topic == "") == (len(p.Users) == 0) {
			http.Error(w, "bad request", http.StatusBadRequest)
			return
		}
		if p.Topic != "" {
			p.Users = nil
		}
		for _, u := range p.Users {
			if _, err := node.Publish("#"+u, p.Data); err != nil {
				http.Error(w, err.Error(), http.StatusServiceUnavailable)
				return
			}
		}
		if p.Topic != "" {
			if _, err := node.Publish(p.Topic, p.Data); err != nil {
				http.Error(w, err.Error(), http.StatusServiceUnavailable)
				return
			}
		}
		w.WriteHeader(http.StatusOK)
	})
	stop := func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = node.Shutdown(ctx)
	}
	return mux, stop, nil
}
