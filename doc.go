// Package firetower adds topic publish/subscribe over WebSocket to a gin
// application, on one node or across a cluster.
//
//	r := gin.Default()
//	r.Use(firetower.Middleware(firetower.Config{APIToken: os.Getenv("FIRETOWER_API_TOKEN")}))
//	r.Run(":9999")
//
// The middleware mounts GET /ws (WebSocket connections that subscribe to
// topics and receive their messages), POST /publish (backends publish with
// a bearer token) and GET /topics/:topic/count (cluster-wide online
// counts). The wire protocol and the REST API are in DESIGN.md.
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
// A publish never waits for a connection: each connection has a bounded
// send queue (Config.SendQueueSize frames) drained by its own writer, and a
// connection whose queue is full is closed with status 1008 instead of
// delaying the others.
//
// # Brokers
//
// A node reaches the rest of its cluster through a broker.Broker: by
// default the topic service embedded in the process (one node, no
// network); topicsvc://host:port for a standalone topic service shared by
// many nodes; redis://host:port/db with -tags redis.
package firetower
