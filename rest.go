package firetower

import (
	"bytes"
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"unicode/utf8"

	"github.com/OSMeteor/firetower/broker"
	"github.com/OSMeteor/firetower/internal/jsonstr"
	"github.com/OSMeteor/firetower/internal/publishbody"
	"github.com/gin-gonic/gin"
)

// The REST handlers for backends: POST {prefix}/publish and
// GET {prefix}/topics/:topic/count, and the authorization that publish and
// the operations routes share (DESIGN §4).

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
	Topic  *strictString   `json:"topic"`
	Topics []strictString  `json:"topics"`
	Users  []strictString  `json:"users"`
	Data   json.RawMessage `json:"data"`
}

// strictString is a JSON string that encoding/json would not rewrite: an
// escaped lone surrogate (\ud800 alone) decodes to U+FFFD, and a topic
// is refused rather than changed.
type strictString string

func (s *strictString) UnmarshalJSON(b []byte) error {
	var v string
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	if hasLoneSurrogate(b) {
		return fmt.Errorf("%w: %s holds an escaped lone surrogate, which is not a character", ErrInvalidTopic, b)
	}
	*s = strictString(v)
	return nil
}

// hasLoneSurrogate reports whether the JSON string b escapes a UTF-16
// surrogate (\ud800-\udfff) that is not the first of a pair followed by
// its second.
func hasLoneSurrogate(b []byte) bool {
	for i := 0; i+1 < len(b); i++ {
		if b[i] != '\\' {
			continue
		}
		if b[i+1] != 'u' {
			i++ // a two-byte escape: skip its second byte
			continue
		}
		r, ok := hex4(b, i+2)
		switch {
		case !ok || r < 0xd800 || r > 0xdfff:
			i += 5
			continue
		case r >= 0xdc00:
			return true // a second half first
		}
		if i+11 < len(b) && b[i+6] == '\\' && b[i+7] == 'u' {
			if r2, ok := hex4(b, i+8); ok && r2 >= 0xdc00 && r2 <= 0xdfff {
				i += 11
				continue
			}
		}
		return true
	}
	return false
}

// hex4 decodes the four hex digits at b[i:].
func hex4(b []byte, i int) (rune, bool) {
	if i+4 > len(b) {
		return 0, false
	}
	var r rune
	for _, c := range b[i : i+4] {
		switch {
		case '0' <= c && c <= '9':
			c -= '0'
		case 'a' <= c && c <= 'f':
			c -= 'a' - 10
		case 'A' <= c && c <= 'F':
			c -= 'A' - 10
		default:
			return 0, false
		}
		r = r<<4 | rune(c)
	}
	return r, true
}

// MaxPublishTopics is the most topics one publish may name, duplicates
// included: on REST (POST /publish answers 400 above it) and on the topic
// service's push API alike.
const MaxPublishTopics = 1024

// dedupeTopics drops the repeats of topics, keeping the first-seen order:
// a topic named twice in one publish is delivered once. It changes topics
// in place and returns it shortened.
func dedupeTopics(topics []string) []string {
	if len(topics) <= 16 { // a map costs more than comparing a few
		out := topics[:0]
	next:
		for _, t := range topics {
			for _, seen := range out {
				if seen == t {
					continue next
				}
			}
			out = append(out, t)
		}
		clear(topics[len(out):])
		return out
	}
	seen := make(map[string]struct{}, len(topics))
	out := topics[:0]
	for _, t := range topics {
		if _, dup := seen[t]; !dup {
			seen[t] = struct{}{}
			out = append(out, t)
		}
	}
	clear(topics[len(out):])
	return out
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

// sameSiteWrite applies DESIGN §4's rule for the routes that change
// state: a browser's request from another site is refused (403) unless
// its origin is allowed, whatever credentials (cookies) it carries, and
// the body must be declared JSON (415 otherwise), which no HTML form can
// send without a CORS preflight. A backend sends neither Origin nor
// Sec-Fetch-Site, so only the content type applies to it.
func (t *Tower) sameSiteWrite(c *gin.Context) bool {
	r := c.Request
	origin := r.Header.Get("Origin")
	site := r.Header.Get("Sec-Fetch-Site")
	switch {
	case origin != "" && !t.originMatches(r, origin):
		jsonError(c, http.StatusForbidden, "cross-site request refused: origin "+origin+" is not allowed to publish; add its host to Config.AllowedOrigins")
		return false
	case origin == "" && (site == "cross-site" || site == "same-site"):
		// A browser that sends Sec-Fetch-Site also sends Origin on a POST.
		jsonError(c, http.StatusForbidden, "cross-site request refused: Sec-Fetch-Site: "+site+" without an Origin")
		return false
	}
	if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != "application/json" {
		jsonError(c, http.StatusUnsupportedMediaType, "the body must be sent with Content-Type: application/json")
		return false
	}
	return true
}

func (t *Tower) servePublish(c *gin.Context) {
	if !t.sameSiteWrite(c) || !t.authorizeREST(c) {
		return
	}
	p := restPublishPool.Get().(*restPublish)
	defer p.free()
	body, ok := t.readJSONBody(c, p.body)
	p.body = body
	if !ok {
		return
	}
	topics, data, ok := publishbody.Parse(body, p.topics[:0])
	p.topics = topics
	if !ok {
		// What the short parser does not take goes through encoding/json,
		// which has the last word and gives the error messages.
		var req publishRequest
		if err := decodeOne(body, &req); err != nil {
			jsonError(c, http.StatusBadRequest, `body must be one JSON object {"topic":"a","data":<JSON>}, {"topics":["a","b"],"data":<JSON>} or {"users":["42"],"data":<JSON>}: `+err.Error())
			return
		}
		if req.Users != nil {
			if req.Topic != nil || req.Topics != nil {
				jsonError(c, http.StatusBadRequest, `a publish names "users" or "topic"/"topics", not both`)
				return
			}
			t.publishToUsers(c, req.Users, req.Data)
			return
		}
		topics = topics[:0]
		if req.Topic != nil {
			topics = append(topics, string(*req.Topic))
		}
		for _, topic := range req.Topics {
			topics = append(topics, string(topic))
		}
		p.topics = topics
		data = req.Data
	}
	if len(topics) == 0 {
		jsonError(c, http.StatusBadRequest, `missing "topic" or "topics"`)
		return
	}
	if len(topics) > MaxPublishTopics {
		jsonError(c, http.StatusBadRequest, "publish to "+itoa(len(topics))+" topics: at most "+itoa(MaxPublishTopics)+" allowed")
		return
	}
	for _, topic := range topics {
		if err := ValidateTopic(topic); err != nil {
			jsonError(c, http.StatusBadRequest, err.Error())
			return
		}
	}
	topics = dedupeTopics(topics)
	if len(data) == 0 {
		jsonError(c, http.StatusBadRequest, `missing "data"`)
		return
	}
	if ok {
		data = bytes.Clone(data) // out of the pooled body: brokers and queues keep it
	}
	ctx := c.Request.Context()
	if !t.brokerInProcess {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, t.cfg.BrokerTimeout)
		defer cancel()
	}
	pub, err := t.publish(ctx, topics, data, true)
	if err != nil {
		status := brokerErrorStatus(err)
		if status == http.StatusServiceUnavailable {
			t.log.Warn("firetower: REST publish failed", "err", err)
		}
		jsonError(c, status, err.Error())
		return
	}
	// {"id":"<uuid>","topics":[...],"offsets":{...}}, encoded by hand
	// into the pooled buffer (Write copies it): this is the path every
	// backend publish takes. offsets only for topics with history.
	b := append(p.out[:0], `{"id":`...)
	b = jsonstr.Append(b, pub.ID)
	b = append(b, `,"topics":[`...)
	for i, topic := range topics {
		if i > 0 {
			b = append(b, ',')
		}
		b = jsonstr.Append(b, topic)
	}
	b = append(b, ']')
	if len(pub.Offsets) > 0 {
		b = append(b, `,"offsets":{`...)
		first := true
		for _, topic := range topics { // in the order published
			pos, ok := pub.Offsets[topic]
			if !ok {
				continue
			}
			if !first {
				b = append(b, ',')
			}
			first = false
			b = jsonstr.Append(b, topic)
			b = append(b, ':')
			b = strconv.AppendUint(b, pos.Offset, 10)
		}
		b = append(b, '}')
	}
	b = append(b, '}')
	p.out = b
	writeJSON(c, http.StatusOK, b)
}

// publishToUsers answers POST {prefix}/publish with "users":
// {"id":"<message id>","users":["42"],"connections":3}.
func (t *Tower) publishToUsers(c *gin.Context, named []strictString, data json.RawMessage) {
	users := make([]string, len(named))
	for i, u := range named {
		users[i] = string(u)
	}
	users, err := checkUsers(users)
	if err != nil {
		jsonError(c, http.StatusBadRequest, err.Error())
		return
	}
	if len(data) == 0 {
		jsonError(c, http.StatusBadRequest, `missing "data"`)
		return
	}
	ctx, cancel := context.WithTimeout(c.Request.Context(), t.cfg.BrokerTimeout)
	defer cancel()
	pub, err := t.publishUsers(ctx, users, data)
	if err != nil {
		status := brokerErrorStatus(err)
		if status == http.StatusServiceUnavailable {
			t.log.Warn("firetower: REST publish to users failed", "err", err)
		}
		jsonError(c, status, err.Error())
		return
	}
	c.JSON(http.StatusOK, gin.H{"id": pub.ID, "users": pub.Users, "connections": pub.Connections})
}

type disconnectRequest struct {
	User   *strictString `json:"user"`
	Reason *strictString `json:"reason"`
}

// readJSONBody reads a request body into buf (reused when big enough),
// answering 413 over MaxBodySize and 400 when it cannot be read or is not
// valid UTF-8: encoding/json would turn invalid bytes of a string into
// U+FFFD, and pass those of raw data through to every subscriber.
func (t *Tower) readJSONBody(c *gin.Context, buf []byte) ([]byte, bool) {
	body, err := readBody(c.Request.Body, buf, c.Request.ContentLength, t.cfg.MaxBodySize)
	switch {
	case err == errBodyTooLarge:
		jsonError(c, http.StatusRequestEntityTooLarge, "body larger than "+itoa(int(t.cfg.MaxBodySize))+" bytes")
		return body, false
	case err != nil:
		jsonError(c, http.StatusBadRequest, "reading the body: "+err.Error())
		return body, false
	case !utf8.Valid(body):
		jsonError(c, http.StatusBadRequest, "body must be valid UTF-8")
		return body, false
	}
	return body, true
}

// decodeOne decodes body into v as json.Unmarshal would, refusing unknown
// fields: one JSON value and nothing after it but whitespace.
func decodeOne(body []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	err := dec.Decode(v)
	if err == nil && len(bytes.TrimLeft(body[dec.InputOffset():], " \t\r\n")) != 0 {
		// As json.Unmarshal says; dec.More would take a '}' or ']'.
		err = errors.New("invalid character after the top-level value")
	}
	return err
}

// serveDisconnect answers POST {prefix}/disconnect {"user":"42"[,"reason":"…"]}:
// {"user":"42","connections":2}, authorized and same-site checked as
// publish is.
func (t *Tower) serveDisconnect(c *gin.Context) {
	if !t.sameSiteWrite(c) || !t.authorizeREST(c) {
		return
	}
	body, ok := t.readJSONBody(c, nil)
	if !ok {
		return
	}
	var req disconnectRequest
	if err := decodeOne(body, &req); err != nil {
		jsonError(c, http.StatusBadRequest, `body must be one JSON object {"user":"42"} or {"user":"42","reason":"<text>"}: `+err.Error())
		return
	}
	if req.User == nil {
		jsonError(c, http.StatusBadRequest, `missing "user"`)
		return
	}
	user := string(*req.User)
	if err := ValidateUserID(user); err != nil {
		jsonError(c, http.StatusBadRequest, err.Error())
		return
	}
	var reason string
	if req.Reason != nil {
		reason = string(*req.Reason)
	}
	ctx, cancel := context.WithTimeout(c.Request.Context(), t.cfg.BrokerTimeout)
	defer cancel()
	n, err := t.DisconnectUser(ctx, user, reason)
	if err != nil {
		status := brokerErrorStatus(err)
		if status == http.StatusServiceUnavailable {
			t.log.Warn("firetower: REST disconnect failed", "err", err)
		}
		jsonError(c, status, err.Error())
		return
	}
	c.JSON(http.StatusOK, gin.H{"user": user, "connections": n})
}

// brokerErrorStatus is the status of a REST answer to a broker's error:
// 503 when the broker cannot serve now (unavailable, closed, shutting
// down, or no answer within BrokerTimeout), and 400 for what it refused
// (a topic or data it does not carry), which a retry would not change.
func brokerErrorStatus(err error) int {
	switch {
	case errors.Is(err, broker.ErrUnavailable), errors.Is(err, broker.ErrClosed), errors.Is(err, ErrShutdown),
		errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		return http.StatusServiceUnavailable
	}
	return http.StatusBadRequest
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

// serveCount answers GET {prefix}/topics/:topic/count for the topic,
// still percent-encoded, that the route table took from the path.
func (t *Tower) serveCount(c *gin.Context, escaped string) {
	topic, ok := pathTopic(c, escaped, "count")
	if !ok {
		return
	}
	// The shared call is bounded by BrokerTimeout, not by the request that
	// happened to make it: the others wait on it too.
	n, err := t.counts.count(c.Request.Context(), topic, func(topic string) (int, error) {
		ctx, cancel := context.WithTimeout(context.Background(), t.cfg.BrokerTimeout)
		defer cancel()
		return t.broker.Count(ctx, topic)
	})
	if err != nil {
		jsonError(c, brokerErrorStatus(err), err.Error())
		return
	}
	if _, ok := t.presenceOptions(topic); ok && t.presencer != nil {
		users, err := t.users.count(c.Request.Context(), topic, t.presenceUsers)
		if err != nil {
			jsonError(c, brokerErrorStatus(err), err.Error())
			return
		}
		c.JSON(http.StatusOK, gin.H{"topic": topic, "count": n, "users": users})
		return
	}
	c.JSON(http.StatusOK, gin.H{"topic": topic, "count": n})
}

// serveHistory answers GET {prefix}/topics/:topic/history?limit=50
// [&since=17[&epoch=E]], authorized like publish:
// {"topic":"a","epoch":"E","offset":25,"messages":[...]}. Without limit,
// all that the topic keeps; since without epoch is in the current epoch.
func (t *Tower) serveHistory(c *gin.Context, escaped string) {
	if !t.authorizeREST(c) {
		return
	}
	topic, ok := pathTopic(c, escaped, "history")
	if !ok {
		return
	}
	q := HistoryQuery{Limit: -1}
	query := c.Request.URL.Query()
	if v := query.Get("limit"); v != "" {
		n, err := strconv.ParseUint(v, 10, 31)
		if err != nil {
			jsonError(c, http.StatusBadRequest, "limit must be a whole number, 0 or more")
			return
		}
		q.Limit = int(n)
	}
	if v := query.Get("since"); v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			jsonError(c, http.StatusBadRequest, "since must be an offset, a whole number")
			return
		}
		q.Since = &StreamPosition{Epoch: query.Get("epoch"), Offset: n}
	} else if query.Get("epoch") != "" {
		jsonError(c, http.StatusBadRequest, "epoch goes with since")
		return
	}
	ctx, cancel := context.WithTimeout(c.Request.Context(), t.cfg.BrokerTimeout)
	defer cancel()
	h, err := t.History(ctx, topic, q)
	if err != nil {
		status := brokerErrorStatus(err)
		if errors.Is(err, ErrNoHistory) {
			status = http.StatusNotFound
		}
		jsonError(c, status, err.Error())
		return
	}
	b := append(make([]byte, 0, 256), `{"topic":`...)
	b = jsonstr.Append(b, topic)
	b = append(b, ',')
	c.Header("Cache-Control", "no-store")
	writeJSON(c, http.StatusOK, appendHistory(b, h))
}

// pathTopic returns the topic of a {prefix}/topics/:topic/<route> path,
// still percent-encoded in escaped, or answers 400 and reports false.
func pathTopic(c *gin.Context, escaped, route string) (string, bool) {
	topic, err := url.PathUnescape(escaped)
	if err == nil {
		err = ValidateTopic(topic)
	}
	if err != nil {
		jsonError(c, http.StatusBadRequest, "topic in the path: "+err.Error()+" (percent-encode it: /topics/%2Fchat%2Fworld/"+route+")")
		return "", false
	}
	return topic, true
}

func itoa(n int) string { return strconv.Itoa(n) }
