package firetower

import (
	"bytes"
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/url"
	"path"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/OSMeteor/firetower/broker"
	"github.com/OSMeteor/firetower/topicsvc"
	"github.com/gin-gonic/gin"
	"github.com/gorilla/websocket"
	"github.com/olahol/melody"
)

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
	m.HandleError(func(s *melody.Session, err error) {
		if c := sessionConn(s); c != nil {
			t.log.Debug("firetower: connection error", "conn", c.id, "user", c.userID, "err", err)
		}
	})
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
	conn := newConn(t, r, userID)
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
	// melody serves the connection in the goroutine that calls it, until
	// the connection ends. Calling it from a goroutine of its own lets this
	// handler return once the upgrade is done: net/http and gin then let
	// go of the request's buffers, gin.Context and deep handler stack,
	// several KB for every open connection.
	w := c.Writer // only used until the upgrade signals
	go func() {
		defer func() {
			t.mu.Lock()
			delete(t.conns, conn)
			t.mu.Unlock()
			t.handlers.Done()
		}()
		if err := t.melody.HandleRequestWithKeys(w, r, map[string]any{connKey: conn}); err != nil {
			t.log.Debug("firetower: upgrade failed", "err", err)
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
	c.start(s)
	t.log.Debug("firetower: connected", "conn", c.id, "user", c.userID)
	if t.cfg.OnConnect != nil {
		t.cfg.OnConnect(c)
	}
}

// onDisconnect leaves every topic the connection held, then runs the hooks.
func (t *Tower) onDisconnect(s *melody.Session) {
	c := sessionConn(s)
	c.cleaned.Do(func() {
		c.shutdown(DisconnectClient, 0, "", false)
		c.writers.Wait()
		defer c.cancel() // after the hooks, which may still use c.Context()
		topics := c.Topics()
		ctx, cancel := context.WithTimeout(context.Background(), t.cfg.BrokerTimeout)
		defer cancel()
		for _, topic := range topics {
			if err := t.hub.unsubscribe(ctx, c, topic); err != nil {
				t.stats.brokerErrors.Add(1)
				t.log.Warn("firetower: broker unsubscribe failed", "conn", c.id, "user", c.userID, "topic", topic, "err", err)
			}
		}
		c.qmu.Lock()
		why := c.reason
		c.qmu.Unlock()
		t.stats.disconnects[why].Add(1)
		t.stats.connections.Add(-1)
		c.mu.Lock()
		clear(c.topics)
		c.mu.Unlock()
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

func (t *Tower) onBinary(s *melody.Session, _ []byte) {
	c := sessionConn(s)
	defer t.recoverCallback(c)
	t.stats.framesIn.Add(1)
	if !c.limiter.allow(time.Now()) {
		t.rateLimited(c, nil)
		return
	}
	c.reply(errorFrame(badRequest("binary frames are not supported: send JSON text frames"), nil))
}

func (t *Tower) rateLimited(c *Conn, frame []byte) {
	t.stats.rateLimited.Add(1)
	if t.cfg.ReadTimeoutHandler != nil {
		t.cfg.ReadTimeoutHandler(c, frame)
	}
	c.reply(errorFrame(&protocolError{code: CodeRateLimited, message: "frame dropped: more than the allowed frames per second"}, nil))
}

// reply queues a reply frame; a closed connection drops it.
func (c *Conn) reply(frame []byte) { c.enqueue(frame, time.Now()) }

// onMessage handles one client text frame, on the connection's read path.
func (t *Tower) onMessage(s *melody.Session, raw []byte) {
	c := sessionConn(s)
	defer t.recoverCallback(c)
	t.stats.framesIn.Add(1)
	if !c.limiter.allow(time.Now()) {
		t.rateLimited(c, raw)
		return
	}
	f, perr := parseFrame(raw)
	if perr != nil {
		c.reply(errorFrame(perr, f.ID))
		return
	}
	switch f.Type {
	case TypeSubscribe:
		t.subscribe(c, f)
	case TypeUnsubscribe:
		t.unsubscribe(c, f)
	case TypePublish:
		t.clientPublish(c, f)
	case TypePing:
		c.reply(encodeReply(replyFrame{Type: TypePong, ID: f.ID}))
	default:
		if t.cfg.ReadHandler == nil {
			c.reply(errorFrame(badRequest("unknown type %q", f.Type), f.ID))
			return
		}
		t.cfg.ReadHandler(c, f)
	}
}

func (t *Tower) brokerContext(c *Conn) (context.Context, context.CancelFunc) {
	return context.WithTimeout(c.ctx, t.cfg.BrokerTimeout)
}

func (t *Tower) subscribe(c *Conn, f *Frame) {
	c.mu.Lock()
	var fresh []string
	for _, topic := range f.Topics {
		if _, held := c.topics[topic]; !held {
			fresh = append(fresh, topic)
		}
	}
	tooMany := len(c.topics)+len(fresh) > t.cfg.MaxTopicsPerConn
	c.mu.Unlock()
	if tooMany {
		c.reply(errorFrame(&protocolError{code: CodeTooManyTopics, message: "a connection holds at most " + itoa(t.cfg.MaxTopicsPerConn) + " topics", topic: f.Topics}, f.ID))
		return
	}
	if len(fresh) > 0 && t.cfg.BeforeSubscribeHandler != nil && !t.cfg.BeforeSubscribeHandler(c, fresh) {
		c.reply(errorFrame(&protocolError{code: CodeForbidden, message: "subscription refused", topic: fresh}, f.ID))
		return
	}
	ctx, cancel := t.brokerContext(c)
	defer cancel()
	c.hold()
	for i, topic := range fresh {
		if err := t.hub.subscribe(ctx, c, topic); err != nil {
			for _, done := range fresh[:i] { // all or nothing
				t.hub.unsubscribe(ctx, c, done)
			}
			c.release(nil)
			t.stats.brokerErrors.Add(1)
			t.log.Warn("firetower: broker subscribe failed", "conn", c.id, "user", c.userID, "topic", topic, "err", err)
			c.reply(errorFrame(brokerError(err, fresh), f.ID))
			return
		}
	}
	c.mu.Lock()
	for _, topic := range fresh {
		c.topics[topic] = struct{}{}
	}
	c.mu.Unlock()
	var reply []byte
	if !t.cfg.BareData {
		reply = encodeReply(replyFrame{Type: TypeSubscribed, Topic: f.Topics, ID: f.ID})
	}
	c.release(reply)
	if len(fresh) > 0 && t.cfg.SubscribeHandler != nil {
		t.cfg.SubscribeHandler(c, fresh)
	}
}

func (t *Tower) unsubscribe(c *Conn, f *Frame) {
	c.mu.Lock()
	var held []string
	for _, topic := range f.Topics {
		if _, ok := c.topics[topic]; ok {
			held = append(held, topic)
			delete(c.topics, topic)
		}
	}
	c.mu.Unlock()
	ctx, cancel := t.brokerContext(c)
	defer cancel()
	for _, topic := range held {
		if err := t.hub.unsubscribe(ctx, c, topic); err != nil {
			t.stats.brokerErrors.Add(1)
			t.log.Warn("firetower: broker unsubscribe failed", "conn", c.id, "user", c.userID, "topic", topic, "err", err)
		}
	}
	if !t.cfg.BareData {
		c.reply(encodeReply(replyFrame{Type: TypeUnsubscribed, Topic: f.Topics, ID: f.ID}))
	}
	if len(held) > 0 && t.cfg.UnSubscribeHandler != nil {
		t.cfg.UnSubscribeHandler(c, held)
	}
}

func (t *Tower) clientPublish(c *Conn, f *Frame) {
	if t.cfg.ReadHandler == nil {
		c.reply(errorFrame(&protocolError{code: CodeForbidden, message: "client publishes are disabled: the server sets Config.ReadHandler to allow them", topic: f.Topics}, f.ID))
		return
	}
	if !t.cfg.ReadHandler(c, f) {
		c.reply(errorFrame(&protocolError{code: CodeForbidden, message: "publish refused", topic: f.Topics}, f.ID))
		return
	}
	ctx, cancel := t.brokerContext(c)
	defer cancel()
	if f.ID == nil {
		if _, err := t.publish(ctx, f.Topics, f.Data); err != nil {
			c.reply(errorFrame(brokerError(err, f.Topics), f.ID))
		}
		return
	}
	// The ack goes before the message itself, should the publisher be a
	// subscriber too: an in-process broker delivers before Publish returns.
	c.hold()
	id, err := t.publish(ctx, f.Topics, f.Data)
	if err != nil {
		c.release(errorFrame(brokerError(err, f.Topics), f.ID))
		return
	}
	c.release(encodeReply(replyFrame{Type: TypePublished, Topic: f.Topics, ID: f.ID, MessageID: id}))
}

// brokerError turns a broker failure into an error frame.
func brokerError(err error, topics []string) *protocolError {
	if errors.Is(err, ErrShutdown) || errors.Is(err, broker.ErrClosed) {
		return &protocolError{code: CodeUnavailable, message: "the server is shutting down", topic: topics}
	}
	return &protocolError{code: CodeUnavailable, message: "the broker is unavailable, retry later", topic: topics}
}

// REST

func jsonError(c *gin.Context, status int, msg string) {
	c.AbortWithStatusJSON(status, gin.H{"error": msg})
}

// authorizeREST applies DESIGN §4: a hook or a bearer token; neither
// configured answers 403 with how to configure one.
func (t *Tower) authorizeREST(c *gin.Context) bool {
	switch {
	case t.cfg.AuthorizeREST != nil:
		if err := t.cfg.AuthorizeREST(c); err != nil {
			jsonError(c, http.StatusUnauthorized, err.Error())
			return false
		}
		return true
	case t.cfg.APIToken == "":
		jsonError(c, http.StatusForbidden, "REST publishing and the operations routes are disabled: set Config.APIToken (FIRETOWER_API_TOKEN in the examples) and send Authorization: Bearer <token>, or set Config.AuthorizeREST")
		return false
	}
	got, ok := strings.CutPrefix(c.GetHeader("Authorization"), "Bearer ")
	if !ok || subtle.ConstantTimeCompare([]byte(got), []byte(t.cfg.APIToken)) != 1 {
		jsonError(c, http.StatusUnauthorized, "missing or wrong bearer token: send Authorization: Bearer <token>")
		return false
	}
	return true
}

type publishRequest struct {
	Topic  *string         `json:"topic"`
	Topics []string        `json:"topics"`
	Data   json.RawMessage `json:"data"`
}

// restPublish is the scratch space of one REST publish, pooled: the body
// and the answer are reused from one request to the next. Nothing in it
// outlives the request: the published data is copied out of the body, since
// brokers and connection queues keep it.
type restPublish struct {
	body   []byte
	topics []string
	out    []byte
}

var restPublishPool = sync.Pool{New: func() any {
	return &restPublish{body: make([]byte, 0, 1024), out: make([]byte, 0, 128)}
}}

// maxPooledBody bounds the body buffer a pooled restPublish keeps, so that
// one large publish does not pin its buffer.
const maxPooledBody = 64 << 10

func (p *restPublish) free() {
	if cap(p.body) > maxPooledBody {
		p.body = nil
	}
	clear(p.topics[:cap(p.topics)])
	restPublishPool.Put(p)
}

var errBodyTooLarge = errors.New("body too large")

// readBody reads all of r into buf[:0], reading at most limit+1 bytes, and
// fails with errBodyTooLarge past limit. size is the length announced (-1:
// unknown); it sizes the buffer and refuses a body announced too large.
func readBody(r io.Reader, buf []byte, size, limit int64) ([]byte, error) {
	buf = buf[:0]
	if size > limit {
		return buf, errBodyTooLarge
	}
	if size >= int64(cap(buf)) {
		buf = make([]byte, 0, size+1) // +1: room for the read that sees EOF
	}
	for {
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
		room := min(int64(cap(buf)-len(buf)), limit+1-int64(len(buf)))
		n, err := r.Read(buf[len(buf) : len(buf)+int(room)])
		buf = buf[:len(buf)+n]
		switch {
		case int64(len(buf)) > limit:
			return buf, errBodyTooLarge
		case err == io.EOF:
			return buf, nil
		case err != nil:
			return buf, err
		}
	}
}

func (t *Tower) servePublish(c *gin.Context) {
	if !t.authorizeREST(c) {
		return
	}
	p := restPublishPool.Get().(*restPublish)
	defer p.free()
	body, err := readBody(c.Request.Body, p.body, c.Request.ContentLength, t.cfg.MaxBodySize)
	p.body = body
	if err != nil {
		if err == errBodyTooLarge {
			jsonError(c, http.StatusRequestEntityTooLarge, "body larger than "+itoa(int(t.cfg.MaxBodySize))+" bytes")
			return
		}
		jsonError(c, http.StatusBadRequest, "reading the body: "+err.Error())
		return
	}
	topics, data, ok := parsePublish(body, p.topics[:0])
	p.topics = topics
	if !ok {
		// What the short parser does not take goes through encoding/json,
		// which has the last word and gives the error messages.
		var req publishRequest
		dec := json.NewDecoder(bytes.NewReader(body))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&req); err != nil || dec.More() {
			msg := `body must be one JSON object {"topic":"a","data":<JSON>} or {"topics":["a","b"],"data":<JSON>}`
			if err != nil {
				msg += ": " + err.Error()
			}
			jsonError(c, http.StatusBadRequest, msg)
			return
		}
		topics = req.Topics
		if req.Topic != nil {
			topics = append([]string{*req.Topic}, topics...)
		}
		data = req.Data
	}
	if len(topics) == 0 {
		jsonError(c, http.StatusBadRequest, `missing "topic" or "topics"`)
		return
	}
	for _, topic := range topics {
		if err := ValidateTopic(topic); err != nil {
			jsonError(c, http.StatusBadRequest, err.Error())
			return
		}
	}
	if len(data) == 0 {
		jsonError(c, http.StatusBadRequest, `missing "data"`)
		return
	}
	if ok {
		data = bytes.Clone(data) // out of the pooled body: brokers and queues keep it
	}
	// BrokerTimeout bounds a broker that waits on something. The embedded
	// one does not: its Publish checks ctx once, then hands the message to
	// the in-process core, whose deliveries never block, so a timer would
	// never fire in time to matter; the request's own context serves.
	ctx := c.Request.Context()
	if _, embedded := t.broker.(*topicsvc.Embedded); !embedded {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, t.cfg.BrokerTimeout)
		defer cancel()
	}
	id, err := t.publish(ctx, topics, data)
	if err != nil {
		t.log.Warn("firetower: REST publish failed", "err", err)
		jsonError(c, http.StatusServiceUnavailable, err.Error())
		return
	}
	// {"id":"<uuid>","topics":[...]}, encoded by hand into the pooled
	// buffer (Write copies it): this is the path every backend publish
	// takes.
	b := append(p.out[:0], `{"id":`...)
	b = appendString(b, id)
	b = append(b, `,"topics":[`...)
	for i, topic := range topics {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendString(b, topic)
	}
	b = append(b, "]}"...)
	p.out = b
	writeJSON(c, http.StatusOK, b)
}

// jsonContentType is shared by every answer that writeJSON sets it on; its
// capacity of 1 makes an append to it copy.
var jsonContentType = []string{"application/json; charset=utf-8"}[:1:1]

// writeJSON answers b as gin's c.Data does, with the header values made
// without allocating where it can.
func writeJSON(c *gin.Context, status int, b []byte) {
	c.Status(status)
	h := c.Writer.Header()
	if len(h["Content-Type"]) == 0 {
		h["Content-Type"] = jsonContentType
	}
	h["Content-Length"] = []string{strconv.Itoa(len(b))}
	if _, err := c.Writer.Write(b); err != nil {
		_ = c.Error(err)
		c.Abort()
	}
}

// parsePublish parses the usual publish body without encoding/json's
// Decoder: one object whose keys are "topic", "topics" and "data", each at
// most once and spelt exactly so, whose topics are strings without escapes,
// and after which comes only whitespace. It appends the topics to topics
// ("topic" first) and returns data as a slice of b. For any other body it
// returns ok false: encoding/json then decides, and for every body that
// parsePublish takes it decodes the same topics and data.
func parsePublish(b []byte, topics []string) (_ []string, data []byte, ok bool) {
	var topic string
	var hasTopic, hasTopics bool
	i := skipSpace(b, 0)
	if i == len(b) || b[i] != '{' {
		return topics, nil, false
	}
	i = skipSpace(b, i+1)
	if i < len(b) && b[i] == '}' {
		i++
	} else {
		for {
			key, j, ok := plainString(b, i)
			if !ok {
				return topics, nil, false
			}
			i = skipSpace(b, j)
			if i == len(b) || b[i] != ':' {
				return topics, nil, false
			}
			i = skipSpace(b, i+1)
			switch string(key) {
			case "topic":
				s, j, ok := plainString(b, i)
				if !ok || hasTopic {
					return topics, nil, false
				}
				topic, hasTopic, i = string(s), true, j
			case "topics":
				if hasTopics || i == len(b) || b[i] != '[' {
					return topics, nil, false
				}
				hasTopics = true
				i = skipSpace(b, i+1)
				if i < len(b) && b[i] == ']' {
					i++
					break
				}
				for {
					s, j, ok := plainString(b, i)
					if !ok {
						return topics, nil, false
					}
					topics = append(topics, string(s))
					i = skipSpace(b, j)
					if i < len(b) && b[i] == ',' {
						i = skipSpace(b, i+1)
						continue
					}
					if i == len(b) || b[i] != ']' {
						return topics, nil, false
					}
					i++
					break
				}
			case "data":
				j := skipValue(b, i)
				if data != nil || j == i || !json.Valid(b[i:j]) {
					return topics, nil, false
				}
				data, i = b[i:j], j
			default:
				return topics, nil, false
			}
			i = skipSpace(b, i)
			if i == len(b) {
				return topics, nil, false
			}
			if b[i] == '}' {
				i++
				break
			}
			if b[i] != ',' {
				return topics, nil, false
			}
			i = skipSpace(b, i+1)
		}
	}
	if skipSpace(b, i) != len(b) {
		return topics, nil, false
	}
	if hasTopic {
		topics = append(topics, "")
		copy(topics[1:], topics)
		topics[0] = topic
	}
	return topics, data, true
}

const maxSkipDepth = 1000

func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// plainString returns the contents of the JSON string at b[i:] and the
// index after it, if it has no escape, no control character and is valid
// UTF-8: encoding/json decodes such a string to its bytes unchanged.
func plainString(b []byte, i int) (_ []byte, end int, ok bool) {
	if i == len(b) || b[i] != '"' {
		return nil, i, false
	}
	for j := i + 1; j < len(b); j++ {
		switch c := b[j]; {
		case c == '"':
			s := b[i+1 : j]
			return s, j + 1, utf8.Valid(s)
		case c == '\\' || c < ' ':
			return nil, i, false
		}
	}
	return nil, i, false
}

// skipValue returns the end of the JSON value that starts at b[i], for a
// valid value; the caller checks validity. A value nested deeper than
// maxSkipDepth ends at i, and so is left to encoding/json, whose nesting
// limit counts the enclosing object too.
func skipValue(b []byte, i int) int {
	depth := 0
	for j := i; j < len(b); j++ {
		switch b[j] {
		case '"':
			for j++; j < len(b) && b[j] != '"'; j++ {
				if b[j] == '\\' {
					j++
				}
			}
			if depth == 0 {
				return min(j+1, len(b))
			}
		case '{', '[':
			if depth++; depth > maxSkipDepth {
				return i
			}
		case '}', ']':
			if depth == 0 {
				return j
			}
			if depth--; depth == 0 {
				return j + 1
			}
		case ',', ' ', '\t', '\n', '\r':
			if depth == 0 {
				return j
			}
		}
	}
	return len(b)
}

func (t *Tower) serveCount(c *gin.Context, escaped string) {
	topic, err := url.PathUnescape(escaped)
	if err == nil {
		err = ValidateTopic(topic)
	}
	if err != nil {
		jsonError(c, http.StatusBadRequest, "topic in the path: "+err.Error()+" (percent-encode it: /topics/%2Fchat%2Fworld/count)")
		return
	}
	ctx, cancel := context.WithTimeout(c.Request.Context(), t.cfg.BrokerTimeout)
	defer cancel()
	n, err := t.broker.Count(ctx, topic)
	if err != nil {
		jsonError(c, http.StatusServiceUnavailable, err.Error())
		return
	}
	c.JSON(http.StatusOK, gin.H{"topic": topic, "count": n})
}

func itoa(n int) string { return strconv.Itoa(n) }
