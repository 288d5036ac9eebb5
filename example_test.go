package firetower_test

import (
	"context"
	"fmt"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"time"

	"github.com/OSMeteor/firetower"
	"github.com/gin-gonic/gin"
	"github.com/gorilla/websocket"
)

// The chat room pattern: whenever someone joins or leaves a room, publish
// the room's new online count to it.
func Example_onlineCount() {
	announce := func(c *firetower.Conn, topics []string) {
		for _, topic := range topics {
			n, _ := c.Tower().GetConnectNum(c.Context(), topic)
			c.Tower().Publish(context.Background(), topic, map[string]any{"type": "online", "count": n})
		}
	}
	tower, _ := firetower.New(firetower.Config{SubscribeHandler: announce, UnSubscribeHandler: announce})
	defer tower.Shutdown(context.Background())

	gin.SetMode(gin.ReleaseMode)
	r := gin.New()
	r.Use(tower.Middleware())
	srv := httptest.NewServer(r)
	defer srv.Close()

	ws, _, _ := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(srv.URL, "http")+"/ws", nil)
	defer ws.Close()
	ws.WriteMessage(websocket.TextMessage, []byte(`{"type":"subscribe","topic":"/chat/world","data":""}`))
	for range 2 {
		_, frame, _ := ws.ReadMessage()
		fmt.Println(regexpID.ReplaceAllString(string(frame), `"id":"…"`))
	}
	// Output:
	// {"type":"subscribed","topic":["/chat/world"]}
	// {"type":"publish","topic":"/chat/world","data":{"count":1,"type":"online"},"id":"…"}
}

// Publishing from a backend handler of the same app.
func ExampleFromContext() {
	r := gin.New()
	r.Use(firetower.Middleware(firetower.Config{}))
	r.POST("/orders", func(c *gin.Context) {
		id, err := firetower.FromContext(c).Publish(c, "/orders/new", gin.H{"order": 42})
		if err != nil {
			c.JSON(503, gin.H{"error": err.Error()})
			return
		}
		c.JSON(200, gin.H{"message": id})
	})
	w := httptest.NewRecorder()
	r.ServeHTTP(w, httptest.NewRequest("POST", "/orders", nil))
	fmt.Println(w.Code)
	// Output: 200
}

// The quick start: firetower on an existing gin app, served with timeouts
// so that slow clients cannot hold connections open before their request
// is in.
func ExampleMiddleware() {
	r := gin.Default()
	r.Use(firetower.Middleware(firetower.Config{APIToken: os.Getenv("FIRETOWER_API_TOKEN")}))
	r.GET("/", func(c *gin.Context) { c.String(200, "the app's own page") })
	srv := &http.Server{
		Addr:              ":9999",
		Handler:           r,
		ReadHeaderTimeout: 5 * time.Second,
		IdleTimeout:       2 * time.Minute,
	}
	if err := srv.ListenAndServe(); err != nil {
		log.Fatal(err)
	}
}

// A server-side publish, and the cluster's busiest topics.
func ExampleTower_Topics() {
	tower, _ := firetower.New(firetower.Config{})
	defer tower.Shutdown(context.Background())
	r := gin.New()
	r.Use(tower.Middleware())
	srv := httptest.NewServer(r)
	defer srv.Close()
	for _, topic := range []string{"/chat/a", "/chat/b", "/chat/b"} {
		ws, _, _ := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(srv.URL, "http")+"/ws", nil)
		defer ws.Close()
		ws.WriteMessage(websocket.TextMessage, []byte(`{"type":"subscribe","topic":"`+topic+`"}`))
		ws.ReadMessage() // subscribed
	}
	if _, err := tower.Publish(context.Background(), "/chat/b", map[string]string{"text": "hi"}); err != nil {
		log.Fatal(err)
	}
	page, _ := tower.Topics(context.Background(), firetower.TopicsQuery{Limit: 10})
	for _, t := range page.Topics {
		fmt.Println(t.Topic, t.Count)
	}
	// Output:
	// /chat/b 2
	// /chat/a 1
}

// A room that keeps its last 100 messages for a day: every message gets
// an offset, a client that reconnects recovers what it missed, and the
// history can be read.
func ExampleTower_History() {
	tower, _ := firetower.New(firetower.Config{
		TopicOptions: func(topic string) firetower.TopicOptions {
			if strings.HasPrefix(topic, "/chat/") {
				return firetower.TopicOptions{HistorySize: 100, HistoryTTL: 24 * time.Hour}
			}
			return firetower.TopicOptions{}
		},
	})
	defer tower.Shutdown(context.Background())
	ctx := context.Background()
	for _, text := range []string{"hello", "anyone here?", "yes"} {
		p, _ := tower.PublishResult(ctx, []string{"/chat/world"}, map[string]string{"text": text})
		fmt.Println("offset", p.Offsets["/chat/world"].Offset)
	}
	h, _ := tower.History(ctx, "/chat/world", firetower.HistoryQuery{Limit: 2})
	for _, m := range h.Messages {
		fmt.Println(m.Offset, string(m.Data))
	}
	// Output:
	// offset 1
	// offset 2
	// offset 3
	// 2 {"text":"anyone here?"}
	// 3 {"text":"yes"}
}
