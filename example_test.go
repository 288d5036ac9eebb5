package firetower_test

import (
	"context"
	"fmt"
	"net/http/httptest"
	"strings"

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
