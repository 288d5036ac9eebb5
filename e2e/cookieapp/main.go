// Command cookieapp is the browser tests' victim: an app that mounts
// firetower with AuthorizeREST checking its own session cookie, the
// pattern the docs describe, and a page that listens on a topic; and, on
// a second address (another origin), an attacker's page whose form posts
// to the app's /publish as soon as it loads.
//
//	COOKIEAPP_ADDR=127.0.0.1:9101 COOKIEAPP_ATTACKER_ADDR=127.0.0.1:9102 go run ./e2e/cookieapp
package main

import (
	"context"
	"errors"
	"fmt"
	"html"
	"log"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/OSMeteor/firetower"
	"github.com/gin-gonic/gin"
)

const sessionCookie = "session"
const sessionValue = "logged-in"

// page subscribes to /victim with firetower.js and keeps what it gets.
const page = `<!doctype html>
<meta charset="utf-8">
<title>cookieapp</title>
<script src="/firetower.js"></script>
<script>
window.received = [];
window.states = [];
const client = firetower.connect('/ws');
client.onState((s) => window.states.push(s));
client.on('/victim', (data) => window.received.push(data));
window.subscribed = client.subscribe('/victim').then(() => true);
</script>`

// attack is a form that posts a JSON-looking text/plain body: its one
// field name and value join with '=' into
// {"topic":"/victim","data":{"pwned":"=1"}}.
const attack = `<!doctype html>
<meta charset="utf-8">
<title>attacker</title>
<form id="f" method="POST" enctype="text/plain" action="%s/publish">
<input type="hidden" name='{"topic":"/victim","data":{"pwned":"' value='1"}}'>
</form>
<script>document.getElementById('f').submit();</script>`

func main() {
	addr := os.Getenv("COOKIEAPP_ADDR")
	attackerAddr := os.Getenv("COOKIEAPP_ATTACKER_ADDR")
	if addr == "" || attackerAddr == "" {
		log.Fatal("set COOKIEAPP_ADDR and COOKIEAPP_ATTACKER_ADDR")
	}
	tower, err := firetower.New(firetower.Config{
		AuthorizeREST: func(c *gin.Context) error {
			if v, err := c.Cookie(sessionCookie); err != nil || v != sessionValue {
				return errors.New("not logged in")
			}
			return nil
		},
	})
	if err != nil {
		log.Fatal(err)
	}
	gin.SetMode(gin.ReleaseMode)
	r := gin.New()
	r.Use(tower.Middleware())
	r.GET("/", func(c *gin.Context) { c.Data(http.StatusOK, "text/html; charset=utf-8", []byte(page)) })
	r.GET("/login", func(c *gin.Context) {
		http.SetCookie(c.Writer, &http.Cookie{Name: sessionCookie, Value: sessionValue, Path: "/", HttpOnly: true, SameSite: http.SameSiteLaxMode})
		c.Redirect(http.StatusFound, "/")
	})
	r.GET("/published", func(c *gin.Context) { c.JSON(http.StatusOK, gin.H{"published": tower.Stats().Published}) })
	app := &http.Server{Addr: addr, Handler: r, ReadHeaderTimeout: 5 * time.Second}

	attacker := http.NewServeMux()
	attacker.HandleFunc("/attack", func(w http.ResponseWriter, req *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		fmt.Fprintf(w, attack, html.EscapeString("http://"+addr))
	})
	evil := &http.Server{Addr: attackerAddr, Handler: attacker, ReadHeaderTimeout: 5 * time.Second}

	for _, s := range []*http.Server{app, evil} {
		go func() {
			if err := s.ListenAndServe(); err != nil && err != http.ErrServerClosed {
				log.Fatal(err)
			}
		}()
	}
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, os.Interrupt)
	<-stop
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	evil.Shutdown(ctx)
	tower.Shutdown(ctx)
	app.Shutdown(ctx)
}
