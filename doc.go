// Package firetower adds topic publish/subscribe over WebSocket to a gin
// application, on one node or across a cluster.
//
//	r := gin.Default()
//	r.Use(firetower.Middleware(firetower.Config{APIToken: os.Getenv("FIRETOWER_API_TOKEN")}))
//
// The middleware mounts GET /ws (WebSocket connections that subscribe to
// topics and receive their messages), POST /publish (backends publish with
// a bearer token), GET /topics/:topic/count (cluster-wide online counts),
// the browser client at GET /firetower.js and /firetower.mjs, and the
// operations routes GET /topics and /stats. Config.Prefix moves them all.
//
// # The protocol in short
//
// WebSocket text frames, one JSON object each. A client sends
//
//	{"type":"subscribe","topic":"a,b"}      or "topic":["a","b"]
//	{"type":"unSubscribe","topic":"a"}
//	{"type":"publish","topic":"a","data":<any JSON>}   offered to Config.ReadHandler
//	{"type":"history","topic":"a","limit":50}   a topic's kept messages
//	{"type":"ping"}
//
// and the node answers
//
//	{"type":"subscribed","topic":["a","b"]}    before any message of those topics
//	{"type":"unsubscribed","topic":["a"]}
//	{"type":"publish","topic":"a","data":<JSON>,"id":"<message id>"}   each message
//	{"type":"published","id":<client id>,"messageId":"<message id>"}   a client publish accepted
//	{"type":"pong"}
//	{"type":"error","code":"bad_request|forbidden|too_many_topics|rate_limited|unavailable","message":"..."}
//
// A client frame may carry an "id" (a string or a number); the reply to it
// carries it back. A client that connects to /ws?batch=1 gets JSON arrays
// of such frames, several per WebSocket frame when its queue holds more
// than one. Topics are 1 to 256 bytes of UTF-8 without commas, whitespace
// or control characters (ValidateTopic); in a REST path they are
// percent-encoded: /topics/%2Fchat%2Fworld/count.
//
// A topic with history (Config.TopicOptions) numbers its messages: each
// publish frame carries "offset":N, a subscribed reply holds each such
// topic's "streams":{"a":{"epoch":"E","offset":25}}, and a client that
// reconnects subscribes with "since":{"a":{"epoch":"E","offset":17}} to get
// "recovered":true and every message it missed, in order and exactly once,
// before the live ones (DESIGN.md §3, "Streams"). Config.BareData sends
// only the bare data of each message, as firetower v0.x servers did.
//
// REST: POST /publish with Content-Type: application/json and
// {"topic":"a","data":<JSON>} or {"topics":["a","b"],"data":<JSON>} (at
// most MaxPublishTopics topics; one named twice is published once)
// answers {"id":"<message id>","topics":[...]}; GET /topics/:topic/count
// answers {"topic":"a","count":N}, reused for up to a second. Errors are
// {"error":"..."} with 400 (bad JSON, topic or data, or refused by the
// broker), 401 (wrong or missing token), 403 (no token configured, or a
// browser's request from another site), 405, 413 (body over
// MaxBodySize), 415 (not sent as application/json) or 503 (the broker
// cannot be reached).
//
// # Authorization
//
// WebSocket connections are open to any client of the page's own origin
// (Config.AllowedOrigins adds others) and, with Config.Authenticate, to
// those it accepts. Everything else that carries data — POST /publish,
// GET /topics, GET /stats and the dashboard's feed — is authorized one
// way: by Config.AuthorizeREST if set, else by the bearer token
// Config.APIToken (Authorization: Bearer <token>, compared in constant
// time). With neither configured those routes answer 403 and say how to
// configure one: nothing is published anonymously. GET /topics/:topic/count
// and the client's script files are public. The dashboard page itself
// holds no data and is public; its script sends the token as a header, and
// firetower sets no cookie, so another site cannot act with a visitor's
// authority. An AuthorizeREST that checks the app's own cookie is safe
// too: POST /publish refuses a browser's request from another site (an
// Origin that is not the node's host or in AllowedOrigins, or
// Sec-Fetch-Site cross-site or same-site without one: 403) and any body
// not sent as application/json (415), which no HTML form can send.
//
// # Concurrency
//
// A Tower's methods (Publish, PublishTopics, GetConnectNum, Shutdown, ...)
// and a Conn's methods are safe to call from any goroutine.
//
// The callbacks of one connection (OnConnect, BeforeSubscribeHandler,
// SubscribeHandler, UnSubscribeHandler, ReadHandler, ReadTimeoutHandler,
// OnDisconnect) run in order on that connection's read goroutine: while one
// runs, the connection reads nothing else. They must not block for long.
// They may call Tower and Conn methods, Publish included. Callbacks of
// different connections run concurrently. A callback that panics closes
// its own connection (status 1011) and the panic is logged; the node and
// the other connections go on.
//
// Work that waits for the broker or the network — a GetConnectNum, a
// Publish to a remote broker, a call to another service — belongs off the
// read path: let the callback record what happened (a room that changed,
// in a map under a mutex) and return, and let a goroutine of the app's,
// stopped before Shutdown, do the work, coalescing what piled up since
// its last round (the chat demo's presence.go announces each changed
// room's count at most every 500 ms).
//
// A publish never waits for a connection: each connection has a bounded
// send queue (Config.SendQueueSize frames) drained by its own writer, and a
// connection whose queue is full is closed with status 1008 instead of
// delaying the others.
//
// # Brokers
//
// A node reaches the rest of its cluster through a broker.Broker: by
// default the topic service embedded in the process (one node, no
// network). Config.BrokerURL names another, and the package that
// implements it is linked in by importing it:
//
//	import _ "github.com/OSMeteor/firetower/topicsvc/client" // topicsvc://host:port, a standalone topic service
//	import _ "github.com/OSMeteor/firetower/broker/redis"    // redis://host:port/db, with -tags redis
//
// Prometheus metrics are in package github.com/OSMeteor/firetower/metrics.
package firetower
