package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
)

// The reconnect storm: Conns clients subscribe to one history topic and
// follow it live (Warmup messages, each client remembering the stream's
// epoch and the last offset it saw); they all disconnect; Count messages are
// published; then every client reconnects at once and subscribes again with
// its position (firetower: "since"; Centrifuge: recover, epoch, offset).
// The storm's time is from the first of those dials until the last client
// holds all Count missed messages. Every client's messages are checked: the
// subscribe reply says recovered, the offsets after it are exactly its
// position + 1 … + Count, in order, none twice, each carrying the data that
// was published at that offset; then one live message is published and must
// reach every client exactly once, right after the recovered ones.

const stormTopic = "s0"

// stormResult is the storm's part of the load generator's RESULT line.
type stormResult struct {
	Clients     int `json:"clients"`
	Warmup      int `json:"warmup"`
	Missed      int `json:"missed"`
	Subscribed  int `json:"subscribed"`  // subscribed and followed the warm-up live
	Reconnected int `json:"reconnected"` // got the reply to the recovering subscribe
	Recovered   int `json:"recovered"`   // whose reply said recovered
	CaughtUp    int `json:"caughtUp"`    // held all missed messages within the time limit
	Correct     int `json:"correct"`     // caught up, nothing missing, twice, out of order or wrong, the live message once
	// Clients with each kind of fault.
	Missing    int    `json:"missing"`
	Duplicated int    `json:"duplicated"`
	WrongData  int    `json:"wrongData"`
	EarlyMsg   int    `json:"earlyMessage"` // a message before the subscribe reply (firetower)
	LiveMissed int    `json:"liveMissed"`
	DialErrors int    `json:"dialErrors"`
	Errors     int    `json:"errors"` // clients with an error (a refused or unexpected reply, a dropped connection)
	FirstError string `json:"firstError,omitempty"`
	// Milliseconds from the storm's start.
	AllMs    float64 `json:"allCaughtUpMs"` // the last client caught up; 0 if not every client did
	DoneP50  float64 `json:"caughtUpP50Ms"`
	DoneP99  float64 `json:"caughtUpP99Ms"`
	AckP50   float64 `json:"replyP50Ms"`
	AckMax   float64 `json:"replyMaxMs"`
	LiveMs   float64 `json:"liveMs"` // the live message after the storm, publish to last delivery
	Messages int64   `json:"messages"`
}

// stormClient is one client's state; only its reader touches it until the
// reader is done.
type stormClient struct {
	i     int
	proto string
	ws    *websocket.Conn
	wmu   sync.Mutex

	epoch string
	last  int64 // the last offset seen
	delta int64 // offset − seq, learnt from the first live message (-1<<62: not yet)

	recovering bool
	acked      bool
	recovered  bool
	want       int64 // the first offset the recovery must bring
	got        int   // missed messages received
	liveGot    int
	missing    bool
	dup        bool
	wrong      bool
	early      bool
	err        string

	warmDone, caughtDone, liveDone bool

	ackAt, doneAt time.Duration
	messages      int64
}

// caughtUp leaves the storm's wait: with all missed messages (at > 0), or
// without (a failure, at 0). Once per client.
func (st *storm) caughtUp(sc *stormClient, at time.Duration) {
	if sc.caughtDone {
		return
	}
	sc.caughtDone = true
	sc.doneAt = at
	st.caught.Done()
}

// liveSeen leaves the wait for the live message after the storm.
func (st *storm) liveSeen(sc *stormClient) {
	if sc.liveDone {
		return
	}
	sc.liveDone = true
	st.live.Done()
}

type storm struct {
	lg      *loadGen
	cfg     loadConfig
	clients []*stormClient
	start   time.Time
	missed  int64
	top     atomic.Int64 // offset of the last warm-up message, once known
	caught  sync.WaitGroup
	live    sync.WaitGroup
	warm    sync.WaitGroup
	stop    atomic.Bool
	pub     *publisher
}

func (lg *loadGen) runStorm() (loadResult, error) {
	c := lg.cfg
	res := loadResult{Conns: c.Conns}
	st := &storm{lg: lg, cfg: c, missed: int64(c.Count)}
	sr := &stormResult{Clients: c.Conns, Warmup: c.Warmup, Missed: c.Count}
	st.pub = newPublisher(c, []int64{0}, &lg.expected)
	st.pub.topic = stormTopic

	// One message before anyone subscribes, so the stream exists (and has
	// its epoch) when the first reply gives its position.
	if err := st.pub.publishErr(); err != nil {
		return res, fmt.Errorf("first publish: %w", err)
	}

	// Subscribe every client, 64 dials at a time as the other scenarios do.
	st.clients = make([]*stormClient, c.Conns)
	var firstErr atomic.Value
	var dialErrs atomic.Int64
	idx := make(chan int)
	var wg sync.WaitGroup
	for range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range idx {
				sc := &stormClient{i: i, proto: c.Proto, delta: -1 << 62}
				if err := st.subscribe(sc, false); err != nil {
					dialErrs.Add(1)
					firstErr.CompareAndSwap(nil, err.Error())
					continue
				}
				st.clients[i] = sc
			}
		}()
	}
	for i := range c.Conns {
		idx <- i
	}
	close(idx)
	wg.Wait()
	if e := firstErr.Load(); e != nil {
		log.Printf("storm: %d subscribe errors, first: %v", dialErrs.Load(), e)
	}
	var active []*stormClient
	for _, sc := range st.clients {
		if sc != nil {
			active = append(active, sc)
		}
	}
	res.Subscribed = len(active)
	if c.Wait {
		fmt.Printf("SUBSCRIBED %d\n", res.Subscribed)
		_, _ = bufio.NewReader(os.Stdin).ReadString('\n')
	}

	// Warm-up: the clients follow the topic live and learn the offsets.
	var readers sync.WaitGroup
	st.warm.Add(len(active))
	for _, sc := range active {
		readers.Add(1)
		go func() {
			defer readers.Done()
			st.read(sc)
		}()
	}
	for range c.Warmup {
		if err := st.pub.publishErr(); err != nil {
			return res, fmt.Errorf("warm-up publish: %w", err)
		}
	}
	if !waitTimeout(&st.warm, 30*time.Second) {
		log.Printf("storm: not every client received the warm-up within 30 s")
	}

	// Everyone drops: the TCP connection closes without a close frame, as
	// when a network goes away.
	st.stop.Store(true)
	for _, sc := range active {
		sc.ws.Close()
	}
	readers.Wait()
	st.stop.Store(false)
	var followed []*stormClient
	for _, sc := range active {
		if sc.err == "" && sc.last > 0 && sc.epoch != "" && !sc.missing && !sc.dup && !sc.wrong {
			followed = append(followed, sc)
		} else if sc.err != "" {
			firstErr.CompareAndSwap(nil, sc.err)
		}
	}
	sr.Subscribed = len(followed)
	// Let the server notice every close before the missed messages go out.
	time.Sleep(time.Second)
	for range c.Count {
		if err := st.pub.publishErr(); err != nil {
			return res, fmt.Errorf("publish while disconnected: %w", err)
		}
	}

	// The storm: every client dials at once (or StormDials at a time).
	for _, sc := range followed {
		sc.recovering = true
		sc.want = sc.last + 1
		sc.ws = nil
	}
	st.caught.Add(len(followed))
	st.live.Add(len(followed))
	fmt.Println("STORMSTART")
	st.start = time.Now()
	par := c.StormDials
	if par <= 0 {
		par = len(followed)
	}
	sem := make(chan struct{}, par)
	for _, sc := range followed {
		readers.Add(1)
		go func() {
			defer readers.Done()
			sem <- struct{}{}
			err := st.subscribe(sc, true)
			<-sem
			if err != nil {
				sc.err = err.Error()
				dialErrs.Add(1)
				st.caughtUp(sc, 0)
				st.liveSeen(sc)
				return
			}
			st.read(sc)
		}()
	}
	limit := c.Duration
	allDone := waitTimeout(&st.caught, limit)
	all := time.Since(st.start)
	fmt.Println("STORMEND")
	if !allDone {
		log.Printf("storm: not every client caught up within %s", limit)
		all = limit
	}
	sr.AllMs = float64(all) / 1e6

	// One live message after the storm: every client must get it exactly
	// once, right after what it recovered.
	livePub := time.Now()
	if err := st.pub.publishErr(); err != nil {
		log.Printf("storm: live publish: %v", err)
	}
	if waitTimeout(&st.live, 10*time.Second) {
		sr.LiveMs = float64(time.Since(livePub)) / 1e6
	}
	// A little longer, for anything that would come twice.
	time.Sleep(300 * time.Millisecond)
	st.stop.Store(true)
	for _, sc := range followed {
		sc.wmu.Lock()
		if sc.ws != nil {
			sc.ws.Close()
		}
		sc.wmu.Unlock()
	}
	readers.Wait()

	var done, acks []float64
	for _, sc := range followed {
		sr.Messages += sc.messages
		if sc.err != "" {
			sr.Errors++
			firstErr.CompareAndSwap(nil, sc.err)
		}
		if sc.acked {
			sr.Reconnected++
			acks = append(acks, float64(sc.ackAt)/1e6)
		}
		if sc.recovered {
			sr.Recovered++
		}
		if sc.doneAt > 0 {
			sr.CaughtUp++
			done = append(done, float64(sc.doneAt)/1e6)
		}
		if sc.missing || (sc.recovered && sc.doneAt == 0) {
			sr.Missing++
		}
		if sc.dup || sc.liveGot > 1 {
			sr.Duplicated++
		}
		if sc.wrong {
			sr.WrongData++
		}
		if sc.early {
			sr.EarlyMsg++
		}
		if sc.liveGot == 0 {
			sr.LiveMissed++
		}
		if sc.err == "" && (sc.recovered || c.StormPlain) && sc.doneAt > 0 && !sc.missing && !sc.dup && !sc.wrong && !sc.early && sc.liveGot == 1 {
			sr.Correct++
		}
	}
	if sr.CaughtUp < sr.Clients {
		// Not a storm's time: someone never caught up (or never came back).
		sr.AllMs = 0
	}
	sr.DoneP50, sr.DoneP99 = quantile(done, 0.5), quantile(done, 0.99)
	sr.AckP50, sr.AckMax = quantile(acks, 0.5), quantile(acks, 1)
	sr.DialErrors = int(dialErrs.Load())
	if e := firstErr.Load(); e != nil {
		sr.FirstError = e.(string)
	}
	res.Storm = sr
	res.Published = st.pub.published.Load()
	res.PublishErrors = st.pub.errors.Load()
	res.Seconds = all.Seconds()
	return res, nil
}

func waitTimeout(wg *sync.WaitGroup, d time.Duration) bool {
	ch := make(chan struct{})
	go func() { wg.Wait(); close(ch) }()
	select {
	case <-ch:
		return true
	case <-time.After(d):
		return false
	}
}

func quantile(v []float64, q float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	i := int(q * float64(len(s)))
	return s[min(i, len(s)-1)]
}

// subscribe dials and subscribes; recovering, it asks for what came after
// the client's last offset. The reply itself is read by read (recovering)
// or here (the first time, to learn the epoch).
func (st *storm) subscribe(sc *stormClient, recovering bool) error {
	c := st.cfg
	src := net.IPv4(127, 0, 0, byte(2+sc.i%c.SrcIPs))
	d := websocket.Dialer{
		HandshakeTimeout: 30 * time.Second,
		ReadBufferSize:   4096,
		WriteBufferSize:  1024,
		NetDialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			nd := net.Dialer{LocalAddr: &net.TCPAddr{IP: src}}
			return nd.DialContext(ctx, network, addr)
		},
	}
	ws, _, err := d.Dial("ws"+strings.TrimPrefix(c.URL, "http")+c.WSPath, nil)
	if err != nil {
		return err
	}
	var sub string
	switch {
	case c.Proto == "cf" && recovering && !c.StormPlain:
		sub = fmt.Sprintf(`{"id":1,"connect":{}}`+"\n"+`{"id":2,"subscribe":{"channel":%q,"recover":true,"epoch":%q,"offset":%d}}`, stormTopic, sc.epoch, sc.last)
	case c.Proto == "cf":
		// A plain subscribe (also the storm's without recovery).
		sub = fmt.Sprintf(`{"id":1,"connect":{}}`+"\n"+`{"id":2,"subscribe":{"channel":%q}}`, stormTopic)
	case recovering && !c.StormPlain:
		sub = fmt.Sprintf(`{"type":"subscribe","topic":[%q],"since":{%q:{"epoch":%q,"offset":%d}},"id":3}`, stormTopic, stormTopic, sc.epoch, sc.last)
	default:
		sub = fmt.Sprintf(`{"type":"subscribe","topic":[%q],"id":3}`, stormTopic)
	}
	sc.wmu.Lock()
	sc.ws = ws
	sc.wmu.Unlock()
	if err := ws.WriteMessage(websocket.TextMessage, []byte(sub)); err != nil {
		ws.Close()
		return err
	}
	if recovering {
		return nil
	}
	_ = ws.SetReadDeadline(time.Now().Add(30 * time.Second))
	defer func() { _ = ws.SetReadDeadline(time.Time{}) }()
	for range 10 {
		_, msg, err := ws.ReadMessage()
		if err != nil {
			ws.Close()
			return err
		}
		st.frame(sc, msg)
		if sc.err != "" {
			ws.Close()
			return fmt.Errorf("client %d: %s", sc.i, sc.err)
		}
		if sc.acked {
			sc.acked = false
			if sc.epoch == "" {
				ws.Close()
				return fmt.Errorf("client %d: the subscribe reply gave no epoch: %s", sc.i, msg)
			}
			return nil
		}
	}
	ws.Close()
	return fmt.Errorf("client %d: no subscribe reply", sc.i)
}

// read handles the client's frames until its connection closes.
func (st *storm) read(sc *stormClient) {
	ws := sc.ws
	for {
		_, msg, err := ws.ReadMessage()
		if err != nil {
			if !st.stop.Load() && sc.err == "" {
				sc.err = fmt.Sprintf("client %d: read: %v", sc.i, err)
			}
			if sc.recovering {
				st.caughtUp(sc, 0)
				st.liveSeen(sc)
			}
			return
		}
		st.frame(sc, msg)
	}
}

// frame handles one WebSocket message of either protocol.
func (st *storm) frame(sc *stormClient, b []byte) {
	if sc.proto == "cf" {
		for len(b) > 0 {
			line := b
			if i := bytes.IndexByte(b, '\n'); i >= 0 {
				line, b = b[:i], b[i+1:]
			} else {
				b = nil
			}
			st.cfReply(sc, line)
		}
		return
	}
	b = bytes.TrimSpace(b)
	if len(b) > 0 && b[0] == '[' {
		elements(b, func(m []byte) { st.ftMessage(sc, m) })
		return
	}
	st.ftMessage(sc, b)
}

var ftKeys = []string{"type", "offset", "data", "streams"}

func (st *storm) ftMessage(sc *stormClient, m []byte) {
	var f [4][]byte
	fields(m, ftKeys, f[:])
	switch string(f[0]) {
	case `"publish"`:
		if !sc.acked && sc.recovering {
			sc.early = true
		}
		st.message(sc, toInt(f[1]), fieldInt(f[2], "seq"))
	case `"subscribed"`:
		s := field(f[3], stormTopic)
		if s == nil {
			sc.err = fmt.Sprintf("subscribe reply without the topic's stream: %s", m)
			return
		}
		st.reply(sc, fieldString(s, "epoch"), fieldInt(s, "offset"), fieldIs(s, "recovered", "true"))
	case `"error"`, `"rate_limited"`, `"forbidden"`:
		sc.err = fmt.Sprintf("server said: %s", m)
	}
}

var pubKeys = []string{"offset", "data"}

func (st *storm) cfReply(sc *stormClient, r []byte) {
	r = bytes.TrimSpace(r)
	if len(r) == 0 {
		return
	}
	if string(r) == "{}" {
		// Centrifuge's ping: answer with an empty command.
		sc.wmu.Lock()
		_ = sc.ws.WriteMessage(websocket.TextMessage, []byte("{}"))
		sc.wmu.Unlock()
		return
	}
	var top [4][]byte
	fields(r, cfKeys, top[:])
	if top[0] != nil {
		sc.err = fmt.Sprintf("server said: %s", r)
		return
	}
	var f [2][]byte
	if top[1] != nil {
		if pub := field(top[1], "pub"); pub != nil {
			fields(pub, pubKeys, f[:])
			st.message(sc, toInt(f[0]), fieldInt(f[1], "seq"))
		}
		return
	}
	if toInt(top[2]) != 2 {
		return
	}
	if top[3] == nil {
		sc.err = fmt.Sprintf("unexpected reply: %s", r)
		return
	}
	// Recovered publications are part of the reply; they count from the
	// moment the reply arrived, as firetower's follow its reply.
	var res [4][]byte
	fields(top[3], cfSubKeys, res[:])
	epoch := ""
	if len(res[0]) >= 2 {
		epoch = string(res[0][1 : len(res[0])-1])
	}
	st.reply(sc, epoch, max(toInt(res[1]), 0), string(res[2]) == "true")
	elements(res[3], func(p []byte) {
		fields(p, pubKeys, f[:])
		st.message(sc, toInt(f[0]), fieldInt(f[1], "seq"))
	})
}

var (
	cfKeys    = []string{"error", "push", "id", "subscribe"}
	cfSubKeys = []string{"epoch", "offset", "recovered", "publications"}
)

// reply handles the subscribe reply: the stream's epoch and top, and
// whether the missed messages follow.
func (st *storm) reply(sc *stormClient, epoch string, top int64, recovered bool) {
	if sc.acked {
		sc.err = "a second subscribe reply"
		return
	}
	sc.acked = true
	if !sc.recovering {
		sc.epoch = epoch
		if top > 0 {
			sc.last = top
		}
		return
	}
	sc.ackAt = time.Since(st.start)
	if st.cfg.StormPlain {
		// Not asking to recover: the reply gives the top; done.
		if top != sc.want-1+st.missed && sc.err == "" {
			sc.err = fmt.Sprintf("client %d: stream top %d in the reply, want %d", sc.i, top, sc.want-1+st.missed)
		}
		st.caughtUp(sc, sc.ackAt)
		return
	}
	sc.recovered = recovered
	if epoch != sc.epoch {
		sc.err = fmt.Sprintf("epoch changed: %q → %q", sc.epoch, epoch)
	}
	// firetower's reply gives the stream's top when the subscription took
	// effect; Centrifuge's, after a recovery, echoes the position asked for
	// (its recovered publications carry the rest).
	wantTop := sc.want - 1 + st.missed
	if sc.proto == "cf" && recovered {
		wantTop = sc.want - 1
	}
	if top != wantTop && sc.err == "" {
		sc.err = fmt.Sprintf("client %d: stream top %d in the reply, want %d", sc.i, top, wantTop)
	}
	if !recovered {
		// Nothing will follow: the client would reload instead.
		st.caughtUp(sc, 0)
	}
}

// message checks one message of the topic against the client's position.
func (st *storm) message(sc *stormClient, off, seq int64) {
	sc.messages++
	if off <= 0 || seq <= 0 {
		sc.wrong = true
		return
	}
	if sc.delta == -1<<62 {
		sc.delta = off - seq
	} else if off-seq != sc.delta {
		sc.wrong = true
	}
	if !sc.recovering {
		// Live, during the warm-up.
		switch {
		case off <= sc.last:
			sc.dup = true
		case off > sc.last+1 && sc.last > 0:
			sc.missing = true
		}
		sc.last = max(sc.last, off)
		if sc.last == int64(st.cfg.Warmup)+1+sc.delta && !sc.warmDone {
			sc.warmDone = true
			st.warm.Done()
		}
		return
	}
	next := sc.want + int64(sc.got)
	liveOff := sc.want + st.missed
	if sc.acked && !sc.recovered {
		// Told that the missed messages do not follow: only the live one
		// is expected.
		if off == liveOff {
			sc.liveGot++
			if sc.liveGot > 1 {
				sc.dup = true
			}
			st.liveSeen(sc)
		} else {
			sc.wrong = true
		}
		return
	}
	switch {
	case off < next:
		sc.dup = true
		return
	case off == liveOff && sc.got == int(st.missed):
		sc.liveGot++
		if sc.liveGot > 1 {
			sc.dup = true
		}
		st.liveSeen(sc)
		return
	case off > liveOff:
		sc.wrong = true
		return
	case off > next:
		sc.missing = true
		sc.got += int(off - next)
	}
	sc.got++
	if sc.got == int(st.missed) {
		st.caughtUp(sc, time.Since(st.start))
	}
}

// publishErr publishes the next message to the storm's topic and reports
// whether the server took it.
func (p *publisher) publishErr() error {
	seq := p.seq.Add(1)
	body := fmt.Sprintf(`{"topic":%q,"data":{"ts":%d,"seq":%d,"p":"%s"}}`, p.topic, time.Now().UnixNano(), seq, p.pad)
	req, _ := http.NewRequest(http.MethodPost, p.url, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+benchToken)
	req.Header.Set("Content-Type", "application/json")
	resp, err := p.client.Do(req)
	if err != nil {
		p.errors.Add(1)
		return err
	}
	defer resp.Body.Close()
	var buf [512]byte
	n, _ := resp.Body.Read(buf[:])
	if resp.StatusCode != http.StatusOK {
		p.errors.Add(1)
		return fmt.Errorf("status %d: %s", resp.StatusCode, buf[:n])
	}
	p.published.Add(1)
	return nil
}
