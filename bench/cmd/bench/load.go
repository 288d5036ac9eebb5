package main

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"math/bits"
	"net"
	"net/http"
	"os"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/gorilla/websocket"
)

// loadConfig is one load generator run: connect, subscribe, publish, count.
type loadConfig struct {
	URL        string // http://host:port of the target
	PubURL     string // http://host:port publishes go to (cluster: another node); default URL
	WSPath     string // path and query of the websocket route
	Proto      string // "ft": firetower frames; "cf": Centrifuge JSON protocol
	Conns      int
	Topics     int
	SrcIPs     int           // connections are spread over 127.0.0.2 .. 127.0.0.(1+SrcIPs)
	Mode       string        // "window": as fast as the window allows; "rate": fixed publishes/s; "once": Count publishes, then wait
	Window     int           // window mode: undelivered messages allowed per subscriber, on average
	Rate       int           // rate mode: publishes per second
	Count      int           // once mode: publishes
	Duration   time.Duration // window and rate modes
	Size       int           // bytes of each message's data
	StallEvery int           // every StallEvery-th connection stops reading (0: none)
	Publishers int           // concurrent HTTP publishers
	Wait       bool          // after subscribing, print SUBSCRIBED and wait for a line on stdin
	SlowLog    string        // write "receive-unix-ns latency-ns" of every message slower than Slow to this file
	Slow       time.Duration
	Warmup     int  // storm mode: messages the clients follow live before they drop
	StormDials int  // storm mode: reconnections dialled at a time (0: all at once)
	StormPlain bool // storm mode: reconnect without asking to recover
	// The presence and users modes (presence.go).
	ServerPid   int  // the server's pid, whose CPU time each phase reads
	ExtraPid    int  // another process to read (a topic service)
	PresenceOff bool // presence mode: subscribe only (the RSS baseline)
	Observers   int  // joinstorm mode: connections that stay subscribed
}

// loadResult is printed as "RESULT <json>" for the driver.
type loadResult struct {
	Conns          int              `json:"conns"`
	Subscribed     int              `json:"subscribed"`
	Stalled        int              `json:"stalled"`
	DialErrors     int              `json:"dialErrors"`
	ConnectSeconds float64          `json:"connectSeconds"`
	Published      int64            `json:"published"`
	PublishErrors  int64            `json:"publishErrors"`
	Expected       int64            `json:"expected"`
	Delivered      int64            `json:"delivered"`
	Lost           int64            `json:"lost"`
	Frames         int64            `json:"frames"`
	Disconnects    int64            `json:"disconnects"`
	WindowStalls   int64            `json:"windowStalls"`
	Seconds        float64          `json:"seconds"`
	DeliveriesPS   float64          `json:"deliveriesPerSec"`
	P50us          float64          `json:"p50us"`
	P99us          float64          `json:"p99us"`
	P999us         float64          `json:"p999us"`
	P90us          float64          `json:"p90us"`
	P95us          float64          `json:"p95us"`
	P98us          float64          `json:"p98us"`
	MaxUs          float64          `json:"maxUs"`
	Storm          *stormResult     `json:"storm,omitempty"`
	Presence       *presenceResultT `json:"presence,omitempty"`
	Join           *joinResult      `json:"join,omitempty"`
	Users          []usersPhase     `json:"users,omitempty"`
}

type loadGen struct {
	cfg       loadConfig
	delivered atomic.Int64
	expected  atomic.Int64
	frames    atomic.Int64
	lastNs    atomic.Int64
	discon    atomic.Int64
	stopping  atomic.Bool
	hist      hist
	slowMu    sync.Mutex
	slowBuf   []byte
}

func loadMain(args []string) {
	var c loadConfig
	fs := flag.NewFlagSet("load", flag.ExitOnError)
	fs.StringVar(&c.URL, "url", "", "http://host:port of the target")
	fs.StringVar(&c.PubURL, "pub-url", "", "http://host:port to publish to (default: -url)")
	fs.StringVar(&c.WSPath, "ws", "/ws", "websocket path and query")
	fs.StringVar(&c.Proto, "proto", "ft", "ft | cf")
	fs.IntVar(&c.Conns, "conns", 1000, "connections")
	fs.IntVar(&c.Topics, "topics", 1, "topics (connection i subscribes to topic i%topics)")
	fs.IntVar(&c.SrcIPs, "srcips", 8, "loopback source addresses to spread connections over")
	fs.StringVar(&c.Mode, "mode", "window", "window | rate | once | storm")
	fs.IntVar(&c.Window, "window", 32, "window mode: undelivered messages per subscriber")
	fs.IntVar(&c.Rate, "rate", 200, "rate mode: publishes per second")
	fs.IntVar(&c.Count, "count", 1, "once mode: publishes; storm mode: messages published while the clients are away")
	fs.IntVar(&c.Warmup, "warmup", 10, "storm mode: messages followed live before the clients drop")
	fs.BoolVar(&c.StormPlain, "storm-plain", false, "storm mode: the clients subscribe again without asking to recover (the reconnections alone)")
	fs.IntVar(&c.StormDials, "storm-dials", 0, "storm mode: reconnections dialled at a time (0: all at once)")
	fs.DurationVar(&c.Duration, "duration", 5*time.Second, "publishing time")
	fs.IntVar(&c.Size, "size", 100, "message data bytes")
	fs.IntVar(&c.StallEvery, "stall-every", 0, "every n-th connection stops reading")
	fs.IntVar(&c.Publishers, "publishers", 4, "concurrent HTTP publishers")
	fs.BoolVar(&c.Wait, "wait", false, "print SUBSCRIBED and wait for a stdin line before publishing")
	fs.StringVar(&c.SlowLog, "slowlog", "", "write receive time and latency (ns) of slow messages to this file")
	fs.DurationVar(&c.Slow, "slow", 5*time.Millisecond, "what -slowlog counts as slow")
	fs.IntVar(&c.ServerPid, "server-pid", 0, "presence, joinstorm, users modes: the server's pid, for its CPU time per phase")
	fs.IntVar(&c.ExtraPid, "extra-pid", 0, "joinstorm mode: another process whose CPU time is read too (a topic service)")
	fs.BoolVar(&c.PresenceOff, "presence-off", false, "presence mode: subscribe only, no queries")
	fs.IntVar(&c.Observers, "observers", 100, "joinstorm mode: connections that stay subscribed and count the joins and leaves")
	cpuprofile := fs.String("cpuprofile", "", "write a CPU profile of the load generator to this file")
	_ = fs.Parse(args)
	raiseNoFile()
	if *cpuprofile != "" {
		f, err := os.Create(*cpuprofile)
		if err != nil {
			log.Fatal(err)
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			log.Fatal(err)
		}
		defer func() { pprof.StopCPUProfile(); f.Close() }()
	}
	lg := &loadGen{cfg: c}
	run := lg.run
	switch c.Mode {
	case "storm":
		run = lg.runStorm
	case "presence":
		run = lg.runPresence
	case "joinstorm":
		run = lg.runJoinStorm
	case "users":
		run = lg.runUsers
	}
	res, err := run()
	if err != nil {
		log.Fatalf("load: %v", err)
	}
	b, _ := json.Marshal(res)
	fmt.Printf("RESULT %s\n", b)
}

type benchConn struct {
	ws      *websocket.Conn
	topic   int
	stalled bool
}

func (lg *loadGen) dial(i int) (*benchConn, error) {
	c := lg.cfg
	src := net.IPv4(127, 0, 0, byte(2+i%c.SrcIPs))
	stalled := c.StallEvery > 0 && i%c.StallEvery == c.StallEvery-1
	d := websocket.Dialer{
		HandshakeTimeout: 20 * time.Second,
		ReadBufferSize:   4096,
		WriteBufferSize:  1024,
		NetDialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			nd := net.Dialer{LocalAddr: &net.TCPAddr{IP: src}}
			if stalled {
				// A small receive buffer makes a client that stops reading push
				// back on the server within seconds rather than megabytes.
				nd.Control = func(_, _ string, rc syscall.RawConn) error {
					return rc.Control(func(fd uintptr) {
						_ = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096)
					})
				}
			}
			return nd.DialContext(ctx, network, addr)
		},
	}
	u := "ws" + strings.TrimPrefix(c.URL, "http") + c.WSPath
	ws, _, err := d.Dial(u, nil)
	if err != nil {
		return nil, err
	}
	bc := &benchConn{ws: ws, topic: i % c.Topics, stalled: stalled}
	topic := "t" + strconv.Itoa(bc.topic)
	var sub, ack string
	if c.Proto == "cf" {
		sub = `{"id":1,"connect":{}}` + "\n" + `{"id":2,"subscribe":{"channel":"` + topic + `"}}`
		ack = `"id":2`
	} else {
		sub = `{"type":"subscribe","topic":"` + topic + `"}`
		ack = `"subscribed"`
	}
	if err := sendAwait(ws, sub, ack, 10); err != nil {
		return nil, err
	}
	return bc, nil
}

// sendAwait sends frame and reads, for at most 30 s and frames frames,
// until one holds ack; an error frame, a read error or no ack closes ws.
func sendAwait(ws *websocket.Conn, frame, ack string, frames int) error {
	if err := ws.WriteMessage(websocket.TextMessage, []byte(frame)); err != nil {
		ws.Close()
		return err
	}
	_ = ws.SetReadDeadline(time.Now().Add(30 * time.Second))
	for range frames {
		_, msg, err := ws.ReadMessage()
		if err != nil {
			ws.Close()
			return err
		}
		if bytes.Contains(msg, []byte(`"error"`)) {
			ws.Close()
			return fmt.Errorf("refused: %.200s", msg)
		}
		if bytes.Contains(msg, []byte(ack)) {
			_ = ws.SetReadDeadline(time.Time{})
			return nil
		}
	}
	ws.Close()
	return fmt.Errorf("no acknowledgement of %.100s", frame)
}

func (lg *loadGen) run() (loadResult, error) {
	c := lg.cfg
	res := loadResult{Conns: c.Conns}
	conns := make([]*benchConn, c.Conns)
	var dialErrs atomic.Int64
	var firstErr atomic.Value
	start := time.Now()
	// Dial with bounded parallelism so the server's accept backlog never
	// overflows and SYN retries do not skew the connect time.
	idx := make(chan int)
	var wg sync.WaitGroup
	for range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range idx {
				bc, err := lg.dial(i)
				if err != nil {
					dialErrs.Add(1)
					firstErr.CompareAndSwap(nil, err.Error())
					continue
				}
				conns[i] = bc
			}
		}()
	}
	for i := range c.Conns {
		idx <- i
	}
	close(idx)
	wg.Wait()
	res.ConnectSeconds = time.Since(start).Seconds()
	res.DialErrors = int(dialErrs.Load())
	if e := firstErr.Load(); e != nil {
		log.Printf("load: %d dial errors, first: %v", res.DialErrors, e)
	}

	subs := make([]int64, c.Topics)
	var readers sync.WaitGroup
	for i, bc := range conns {
		if bc == nil {
			continue
		}
		res.Subscribed++
		if bc.stalled {
			res.Stalled++
			continue
		}
		subs[bc.topic]++
		readers.Add(1)
		go func() {
			defer readers.Done()
			lg.read(bc.ws, i)
		}()
	}
	if c.Wait {
		fmt.Printf("SUBSCRIBED %d\n", res.Subscribed)
		_, _ = bufio.NewReader(os.Stdin).ReadString('\n')
	}

	pubStart := time.Now()
	lg.lastNs.Store(pubStart.UnixNano())
	p := newPublisher(c, subs, &lg.expected)
	switch c.Mode {
	case "window":
		res.WindowStalls = lg.publishWindow(p, res.Subscribed-res.Stalled)
	case "rate":
		lg.publishRate(p)
	case "once":
		for range c.Count {
			p.publish()
		}
	}
	// Drain: wait for the deliveries still in flight, giving up once nothing
	// arrived for a while (a lost message never arrives).
	drainIdle := 3 * time.Second
	if c.Mode == "once" {
		drainIdle = 30 * time.Second
	}
	last, lastChange := lg.delivered.Load(), time.Now()
	for lg.delivered.Load() < lg.expected.Load() && time.Since(lastChange) < drainIdle {
		time.Sleep(5 * time.Millisecond)
		if d := lg.delivered.Load(); d != last {
			last, lastChange = d, time.Now()
		}
	}
	lg.stopping.Store(true)

	res.Published = p.published.Load()
	res.PublishErrors = p.errors.Load()
	res.Expected = lg.expected.Load()
	res.Delivered = lg.delivered.Load()
	res.Lost = res.Expected - res.Delivered
	res.Frames = lg.frames.Load()
	res.Disconnects = lg.discon.Load()
	res.Seconds = float64(lg.lastNs.Load()-pubStart.UnixNano()) / 1e9
	if res.Seconds > 0 {
		res.DeliveriesPS = float64(res.Delivered) / res.Seconds
	}
	res.P50us = lg.hist.quantile(0.50) / 1e3
	res.P99us = lg.hist.quantile(0.99) / 1e3
	res.P999us = lg.hist.quantile(0.999) / 1e3
	res.P90us = lg.hist.quantile(0.90) / 1e3
	res.P95us = lg.hist.quantile(0.95) / 1e3
	res.P98us = lg.hist.quantile(0.98) / 1e3
	if c.SlowLog != "" {
		lg.slowMu.Lock()
		_ = os.WriteFile(c.SlowLog, lg.slowBuf, 0o644)
		lg.slowMu.Unlock()
	}
	res.MaxUs = lg.hist.quantile(1) / 1e3
	for _, bc := range conns {
		if bc != nil {
			bc.ws.Close()
		}
	}
	readers.Wait()
	return res, nil
}

// read counts every message in every frame: a batched frame (a JSON array,
// or Centrifuge's newline-separated replies) carries several.
func (lg *loadGen) read(ws *websocket.Conn, shard int) {
	buf := make([]byte, 0, 512)
	for {
		_, r, err := ws.NextReader()
		if err != nil {
			if !lg.stopping.Load() {
				lg.discon.Add(1)
			}
			return
		}
		buf = buf[:0]
		for {
			if len(buf) == cap(buf) {
				buf = append(buf, 0)[:len(buf)]
			}
			n, err := r.Read(buf[len(buf):cap(buf)])
			buf = buf[:len(buf)+n]
			if err == io.EOF {
				break
			}
			if err != nil {
				if !lg.stopping.Load() {
					lg.discon.Add(1)
				}
				return
			}
		}
		now := time.Now().UnixNano()
		n := lg.scan(buf, now, shard)
		if n > 0 {
			lg.frames.Add(1)
			lg.delivered.Add(int64(n))
			lg.lastNs.Store(now)
		} else if lg.cfg.Proto == "cf" && bytes.Contains(buf, []byte("{}")) {
			// Centrifuge pings with an empty command and expects one back.
			_ = ws.WriteMessage(websocket.TextMessage, []byte("{}"))
		}
	}
}

var tsKey = []byte(`"ts":`)

// scan records the latency of every message in a frame and returns how many
// it held. Only the timestamp is parsed: the load generator must stay cheaper
// than the servers it measures.
func (lg *loadGen) scan(b []byte, now int64, shard int) int {
	n := 0
	for {
		i := bytes.Index(b, tsKey)
		if i < 0 {
			return n
		}
		b = b[i+len(tsKey):]
		var ts int64
		j := 0
		for j < len(b) && b[j] >= '0' && b[j] <= '9' {
			ts = ts*10 + int64(b[j]-'0')
			j++
		}
		b = b[j:]
		lg.hist.record(shard, now-ts)
		if lg.cfg.SlowLog != "" && now-ts > int64(lg.cfg.Slow) && !lg.stopping.Load() {
			lg.slowMu.Lock()
			lg.slowBuf = fmt.Appendf(lg.slowBuf, "%d %d %d\n", now, now-ts, shard)
			lg.slowMu.Unlock()
		}
		n++
	}
}

type publisher struct {
	cfg       loadConfig
	subs      []int64
	expected  *atomic.Int64
	client    *http.Client
	url       string
	topic     string // publishErr's topic
	pad       string
	seq       atomic.Int64
	published atomic.Int64
	errors    atomic.Int64
}

func newPublisher(c loadConfig, subs []int64, expected *atomic.Int64) *publisher {
	padLen := max(c.Size-len(`{"ts":1700000000000000000,"seq":100000,"p":""}`), 0)
	return &publisher{
		cfg: c, subs: subs, expected: expected,
		url: cmp.Or(c.PubURL, c.URL) + "/publish",
		pad: strings.Repeat("x", padLen),
		client: &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
			MaxIdleConnsPerHost: c.Publishers, MaxConnsPerHost: c.Publishers, DisableCompression: true,
		}},
	}
}

func (p *publisher) publish() {
	seq := p.seq.Add(1)
	topic := int(seq % int64(len(p.subs)))
	// Expected is raised before the send so a delivery never outruns it.
	p.expected.Add(p.subs[topic])
	body := fmt.Sprintf(`{"topic":"t%d","data":{"ts":%d,"seq":%d,"p":"%s"}}`, topic, time.Now().UnixNano(), seq, p.pad)
	req, _ := http.NewRequest(http.MethodPost, p.url, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+benchToken)
	req.Header.Set("Content-Type", "application/json")
	resp, err := p.client.Do(req)
	if err == nil {
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			err = fmt.Errorf("status %d", resp.StatusCode)
		}
	}
	if err != nil {
		p.expected.Add(-p.subs[topic])
		if p.errors.Add(1) == 1 {
			log.Printf("load: publish: %v", err)
		}
		return
	}
	p.published.Add(1)
}

// publishWindow publishes as fast as the servers deliver, keeping at most
// Window undelivered messages per subscriber in flight: fast enough to
// saturate, never so far ahead that a bounded server queue has to drop.
func (lg *loadGen) publishWindow(p *publisher, active int) int64 {
	limit := int64(lg.cfg.Window) * int64(active)
	deadline := time.Now().Add(lg.cfg.Duration)
	var stalls atomic.Int64
	var wg sync.WaitGroup
	for range lg.cfg.Publishers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(deadline) {
				waitFrom, last := time.Now(), lg.delivered.Load()
				for lg.expected.Load()-lg.delivered.Load() > limit {
					time.Sleep(50 * time.Microsecond)
					if d := lg.delivered.Load(); d != last {
						waitFrom, last = time.Now(), d
					}
					// Lost deliveries never come: after a second without
					// progress, go on and let the count show the loss.
					if time.Since(waitFrom) > time.Second {
						stalls.Add(1)
						break
					}
				}
				if stalls.Load() > 10 {
					return
				}
				p.publish()
			}
		}()
	}
	wg.Wait()
	return stalls.Load()
}

// publishRate publishes at a fixed rate, so latency is measured at a load
// every target sustains (the stalled scenario).
func (lg *loadGen) publishRate(p *publisher) {
	jobs := make(chan struct{}, 1024)
	var wg sync.WaitGroup
	for range lg.cfg.Publishers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range jobs {
				p.publish()
			}
		}()
	}
	interval := time.Second / time.Duration(lg.cfg.Rate)
	start := time.Now()
	n := int(lg.cfg.Duration / interval)
	for i := range n {
		time.Sleep(time.Until(start.Add(time.Duration(i) * interval)))
		select {
		case jobs <- struct{}{}:
		default:
			log.Printf("load: publishers cannot keep up with %d/s", lg.cfg.Rate)
		}
	}
	close(jobs)
	wg.Wait()
}

// hist is a log-linear latency histogram (32 buckets per power of two, about
// 3% resolution), sharded so readers on both cores rarely share a line.
const histSub = 32

type hist struct {
	shards [16][64 * histSub]atomic.Uint64
}

func bucketOf(v int64) int {
	if v < histSub {
		return int(max(v, 0))
	}
	e := bits.Len64(uint64(v)) - 1
	m := (v >> (e - 5)) & (histSub - 1)
	return (e-4)*histSub + int(m)
}

func bucketValue(i int) float64 {
	if i < histSub {
		return float64(i)
	}
	e := i/histSub + 4
	m := i % histSub
	return float64(int64(histSub+m) << (e - 5))
}

func (h *hist) record(shard int, v int64) {
	h.shards[shard%len(h.shards)][bucketOf(v)].Add(1)
}

func (h *hist) quantile(q float64) float64 {
	var counts [64 * histSub]uint64
	var total uint64
	for s := range h.shards {
		for i := range counts {
			c := h.shards[s][i].Load()
			counts[i] += c
			total += c
		}
	}
	if total == 0 {
		return 0
	}
	rank := uint64(q * float64(total))
	if rank >= total {
		rank = total - 1
	}
	var cum uint64
	for i, c := range counts {
		cum += c
		if cum > rank {
			return bucketValue(i)
		}
	}
	return 0
}
