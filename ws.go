package firetower

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/url"
	"path"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/gorilla/websocket"
	"github.com/olahol/melody"
)

// The WebSocket handler: the upgrade of GET {prefix}/ws and the melody
// session callbacks that open and finish a Conn. The frames a client sends
// are handled in commands.go.

const connKey = "firetower.conn"

func (t *Tower) newMelody() *melody.Melody {
	m := melody.New()
	m.Config.MaxMessageSize = t.cfg.MaxFrameSize
	m.Config.PongWait = t.cfg.PongTimeout
	m.Config.WriteWait = t.cfg.WriteTimeout
	// The Conn's writer owns every data write and sends the pings; melody's
	// own writer must never write, so its ping never fires and its output
	// buffer stays unused.
	m.Config.PingPeriod = time.Duration(1<<63 - 1)
	m.Config.MessageBufferSize = 1
	m.Upgrader = &websocket.Upgrader{
		ReadBufferSize:  256, // client frames are small; a larger one takes more reads
		WriteBufferSize: 4096,
		// Buffers are taken only while a write is under way: an idle
		// connection holds none.
		WriteBufferPool: &writeBufferPool,
		// Origins are checked before the upgrade, with a clear answer.
		CheckOrigin: func(*http.Request) bool { return true },
	}
	m.HandleConnect(t.onConnect)
	m.HandleMessage(t.onMessage)
	m.HandleMessageBinary(t.onBinary)
	m.HandleDisconnect(t.onDisconnect)
	m.HandleError(t.onReadError)
	return m
}

var writeBufferPool sync.Pool

func sessionConn(s *melody.Session) *Conn {
	v, _ := s.Get(connKey)
	c, _ := v.(*Conn)
	return c
}

// serveWS authenticates, checks the origin and upgrades.
func (t *Tower) serveWS(c *gin.Context) {
	r := c.Request
	if !t.originAllowed(r) {
		jsonError(c, http.StatusForbidden, "origin "+r.Header.Get("Origin")+" is not allowed: add its host to Config.AllowedOrigins")
		return
	}
	var userID string
	if t.cfg.Authenticate != nil {
		id, err := t.cfg.Authenticate(c)
		if err != nil {
			jsonError(c, http.StatusUnauthorized, err.Error())
			return
		}
		userID = id
	}
	if userID != "" {
		if err := ValidateUserID(userID); err != nil {
			t.log.Warn("firetower: Authenticate returned a user id that cannot be addressed; refusing the connection", "err", err)
			jsonError(c, http.StatusBadRequest, err.Error()+" (Config.Authenticate returned it)")
			return
		}
		ok, n, err := t.userConnsAllowed(r.Context(), userID)
		switch {
		case err != nil:
			t.stats.brokerErrors.Add(1)
			jsonError(c, brokerErrorStatus(err), "counting the user's connections: "+err.Error())
			return
		case !ok:
			jsonError(c, http.StatusTooManyRequests, "user "+strconv.Quote(userID)+" has "+itoa(n)+" connections open, at most "+itoa(t.cfg.MaxConnsPerUser)+" allowed (Config.MaxConnsPerUser)")
			return
		}
	}
	conn := newConn(t, r, userID, connInfo(c))
	t.mu.Lock()
	if t.closing {
		t.mu.Unlock()
		jsonError(c, http.StatusServiceUnavailable, "firetower: server shutting down")
		return
	}
	t.conns[conn] = struct{}{}
	t.handlers.Add(1)
	t.mu.Unlock()
	t.pinger.Do(func() { go t.housekeeping() })
	// The upgrade writes its 101 on the hijacked connection, past gin's
	// ResponseWriter: record it there first, so that gin's logger shows
	// it. A refused upgrade writes its own status over it, since nothing
	// was written yet.
	w := c.Writer // only used until the upgrade signals
	w.WriteHeader(http.StatusSwitchingProtocols)
	// melody serves the connection in the goroutine that calls it, until
	// the connection ends. Calling it from a goroutine of its own lets this
	// handler return once the upgrade is done: net/http and gin then let
	// go of the request's buffers, gin.Context and deep handler stack,
	// several KB for every open connection.
	go func() {
		defer func() {
			t.mu.Lock()
			delete(t.conns, conn)
			t.mu.Unlock()
			t.handlers.Done()
		}()
		if err := t.melody.HandleRequestWithKeys(w, r, map[string]any{connKey: conn}); err != nil {
			t.log.Debug("firetower: upgrade failed", "err", err)
			if !w.Written() { // melody refused before the upgrader answered
				w.Header().Set("Content-Type", "application/json; charset=utf-8")
				w.WriteHeader(http.StatusServiceUnavailable)
				w.Write([]byte(`{"error":"firetower: server shutting down"}`))
			}
			conn.cancel()
		}
		conn.upgradeDone()
	}()
	<-conn.upgraded
}

// originAllowed implements the same-origin default of DESIGN §3.
func (t *Tower) originAllowed(r *http.Request) bool {
	origin := r.Header.Get("Origin")
	if origin == "" || t.cfg.InsecureSkipOriginCheck {
		return true // not a browser, or the check is off
	}
	return t.originMatches(r, origin)
}

// originMatches reports whether origin is the request's own host or one
// of Config.AllowedOrigins.
func (t *Tower) originMatches(r *http.Request, origin string) bool {
	u, err := url.Parse(origin)
	if err != nil || u.Host == "" {
		return false
	}
	if strings.EqualFold(u.Host, r.Host) {
		return true
	}
	host := strings.ToLower(u.Host)
	for _, p := range t.cfg.AllowedOrigins {
		if ok, _ := path.Match(strings.ToLower(p), host); ok {
			return true
		}
	}
	return false
}

// recoverCallback turns a panic in an application callback into a log
// line and the end of that connection (status 1011), so that one buggy
// callback neither kills the process nor skips the connection's cleanup.
func (t *Tower) recoverCallback(c *Conn) {
	if v := recover(); v != nil {
		t.log.Error("firetower: a callback panicked; closing its connection", "conn", c.id, "user", c.userID, "panic", v, "stack", string(debug.Stack()))
		c.shutdown(DisconnectServer, websocket.CloseInternalServerErr, "firetower: internal error", false)
	}
}

func (t *Tower) onConnect(s *melody.Session) {
	c := sessionConn(s)
	c.upgradeDone() // the HTTP handler may return now
	defer t.recoverCallback(c)
	t.stats.connections.Add(1)
	t.stats.connectionsTotal.Add(1)
	c.attach(s.WebsocketConnection())
	t.log.Debug("firetower: connected", "conn", c.id, "user", c.userID)
	t.subscribeUser(c) // users.go: before OnConnect, so pushes from it arrive
	if t.cfg.OnConnect != nil {
		t.cfg.OnConnect(c)
	}
}

// onReadError records why the read side ended, before onDisconnect runs:
// melody calls it with the error that ended the read loop.
func (t *Tower) onReadError(s *melody.Session, err error) {
	c := sessionConn(s)
	if c == nil {
		return
	}
	why := readErrorReason(err)
	c.shutdown(why, 0, "", false) // a no-op if the node closed it first
	t.log.Debug("firetower: connection ended", "conn", c.id, "user", c.userID, "reason", why.String(), "err", err)
}

// readErrorReason says what an error of the read side means.
func readErrorReason(err error) DisconnectReason {
	var ne net.Error
	switch {
	case errors.Is(err, websocket.ErrReadLimit):
		return DisconnectTooLarge // gorilla sent 1009
	case errors.As(err, new(*websocket.CloseError)),
		errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF),
		errors.Is(err, syscall.ECONNRESET), errors.Is(err, net.ErrClosed):
		return DisconnectClient
	case errors.As(err, &ne) && ne.Timeout():
		return DisconnectPingTimeout // the read deadline: no pong in PongTimeout
	case strings.HasPrefix(err.Error(), "websocket: "):
		return DisconnectProtocol // gorilla sent 1002
	}
	return DisconnectClient
}

// onDisconnect leaves every topic the connection held, then runs the hooks.
func (t *Tower) onDisconnect(s *melody.Session) {
	c := sessionConn(s)
	c.finished.Do(func() {
		c.shutdown(DisconnectClient, 0, "", false) // unless a reason is recorded
		c.writers.Wait()
		defer c.cancel() // after the hooks, which may still use c.Context()
		// Under subMu: a server-side Subscribe either ran before, and its
		// topics are taken here, or sees the connection closed.
		c.subMu.Lock()
		topics := c.takeTopics()
		leave := topics
		if c.userSubscribed {
			leave = append(slices.Clip(topics), c.userTopic())
			c.userSubscribed = false
		}
		ctx, cancel := context.WithTimeout(context.Background(), t.cfg.BrokerTimeout)
		defer cancel()
		t.removePresence(c, topics)
		err := t.hub.unsubscribe(ctx, c, leave)
		c.subMu.Unlock()
		if err != nil {
			t.stats.brokerErrors.Add(1)
			t.log.Warn("firetower: broker unsubscribe failed", "conn", c.id, "user", c.userID, "topics", len(topics), "err", err)
		}
		why := c.DisconnectReason()
		t.stats.disconnects[why].Add(1)
		t.stats.connections.Add(-1)
		if len(topics) > 0 && t.cfg.UnSubscribeHandler != nil {
			func() {
				defer t.recoverCallback(c)
				t.cfg.UnSubscribeHandler(c, topics)
			}()
		}
		if t.cfg.OnDisconnect != nil {
			func() {
				defer t.recoverCallback(c)
				t.cfg.OnDisconnect(c)
			}()
		}
		t.log.Debug("firetower: disconnected", "conn", c.id, "user", c.userID, "reason", why.String())
	})
}
