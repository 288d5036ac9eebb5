package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
)

// The load of the presence and users scenarios (presence10k, joinstorm,
// users1k). Every connection names its user in the query (?user=…, see
// presence_servers.go). The load generator reads the server's CPU time
// itself (/proc/<pid>/stat of -server-pid, and of -extra-pid, a topic
// service) around each phase, so one run gives a figure per phase.

const presenceTopic = "t0"

// presenceQueries is how many presence queries each query phase asks.
const presenceQueries = 200

// presencePhase is one way of asking for the presence, Queries times.
type presencePhase struct {
	Name     string  `json:"name"`
	Conc     int     `json:"concurrency"`
	Queries  int     `json:"queries"`
	Errors   int     `json:"errors"`
	FirstErr string  `json:"firstError,omitempty"`
	P50Ms    float64 `json:"p50ms"`
	P99Ms    float64 `json:"p99ms"`
	Bytes    int     `json:"bytes"`    // the answer's size (median)
	Clients  int     `json:"clients"`  // clients listed in the answer (median)
	Reported int     `json:"reported"` // connections the answer counts (firetower; Centrifuge's is the list)
	Seconds  float64 `json:"seconds"`
	CPU      float64 `json:"cpuSeconds"` // the server's CPU time over the phase
}

// joinResult is the join storm's part of the RESULT line.
type joinResult struct {
	Observers  int    `json:"observers"`
	Joiners    int    `json:"joiners"`    // dialled
	Subscribed int    `json:"subscribed"` // whose subscribe was acknowledged: the joins and leaves expected
	DialErrors int    `json:"dialErrors"`
	FirstErr   string `json:"firstError,omitempty"`
	// Per observer and joiner: a join and a leave expected once each.
	Joins               int64   `json:"joins"`
	JoinLost            int64   `json:"joinLost"`
	JoinDup             int64   `json:"joinDup"`
	Leaves              int64   `json:"leaves"`
	LeaveLost           int64   `json:"leaveLost"`
	LeaveDup            int64   `json:"leaveDup"`
	Stray               int64   `json:"stray"` // join or leave of a joiner that never subscribed
	JoinerFrames        int64   `json:"joinerEvents"`
	P50Ms               float64 `json:"joinP50ms"`
	P99Ms               float64 `json:"joinP99ms"`
	StormSeconds        float64 `json:"stormSeconds"`  // first dial to last subscribe
	SettleSeconds       float64 `json:"settleSeconds"` // first dial until the last leave arrived (or gave up)
	CPU                 float64 `json:"cpuSeconds"`
	ExtraCPU            float64 `json:"extraCPUSeconds"`
	ObserverDisconnects int64   `json:"observerDisconnects"`
	ObserverErr         string  `json:"observerError,omitempty"`
}

// usersPhase is one way of publishing to users.
type usersPhase struct {
	Name      string  `json:"name"`
	Requests  int64   `json:"requests"`
	Errors    int64   `json:"errors"`
	Expected  int64   `json:"expected"`
	Delivered int64   `json:"delivered"`
	Lost      int64   `json:"lost"`
	Seconds   float64 `json:"seconds"`
	DPS       float64 `json:"deliveriesPerSec"`
	P50Ms     float64 `json:"p50ms"`
	P99Ms     float64 `json:"p99ms"`
	CPU       float64 `json:"cpuSeconds"`
}

// wsURL is the websocket URL of a connection of user.
func wsURL(c loadConfig, user string) string {
	u := "ws" + strings.TrimPrefix(c.URL, "http") + c.WSPath
	if user == "" {
		return u
	}
	sep := "?"
	if strings.Contains(u, "?") {
		sep = "&"
	}
	return u + sep + "user=" + user
}

// dialUser opens connection i of user and, with a topic, subscribes it
// (Centrifuge: connect, then subscribe), returning once the subscribe (or
// the connect) is acknowledged. sent, if not nil, gets the time the
// subscribe was written.
func dialUser(c loadConfig, i int, user, topic string, sent *atomic.Int64) (*websocket.Conn, error) {
	src := net.IPv4(127, 0, 0, byte(2+i%max(c.SrcIPs, 1)))
	d := websocket.Dialer{
		HandshakeTimeout: 20 * time.Second,
		ReadBufferSize:   4096,
		WriteBufferSize:  1024,
		NetDialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			nd := net.Dialer{LocalAddr: &net.TCPAddr{IP: src}}
			return nd.DialContext(ctx, network, addr)
		},
	}
	ws, _, err := d.Dial(wsURL(c, user), nil)
	if err != nil {
		return nil, err
	}
	var sub, ack string
	switch {
	case c.Proto == "cf" && topic != "":
		sub = `{"id":1,"connect":{}}` + "\n" + `{"id":2,"subscribe":{"channel":"` + topic + `"}}`
		ack = `"id":2`
	case c.Proto == "cf":
		sub, ack = `{"id":1,"connect":{}}`, `"id":1`
	case topic != "":
		sub, ack = `{"type":"subscribe","topic":"`+topic+`"}`, `"subscribed"`
	default:
		return ws, nil // firetower has nothing to acknowledge a connection
	}
	if sent != nil {
		sent.Store(time.Now().UnixNano())
	}
	if err := sendAwait(ws, sub, ack, 10000); err != nil {
		return nil, err
	}
	return ws, nil
}

// dialMany dials n connections 64 at a time; nil where a dial failed.
func dialMany(n int, dial func(i int) (*websocket.Conn, error)) ([]*websocket.Conn, int, string) {
	conns := make([]*websocket.Conn, n)
	var errs atomic.Int64
	var first atomic.Value
	idx := make(chan int)
	var wg sync.WaitGroup
	for range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range idx {
				ws, err := dial(i)
				if err != nil {
					errs.Add(1)
					first.CompareAndSwap(nil, err.Error())
					continue
				}
				conns[i] = ws
			}
		}()
	}
	for i := range n {
		idx <- i
	}
	close(idx)
	wg.Wait()
	fe, _ := first.Load().(string)
	if fe != "" {
		log.Printf("load: %d dial errors, first: %s", errs.Load(), fe)
	}
	return conns, int(errs.Load()), fe
}

// eachFrame reads ws until it fails, calling f with every frame (the
// buffer is reused) and answering Centrifuge's pings.
func eachFrame(ws *websocket.Conn, proto string, f func(b []byte)) error {
	buf := make([]byte, 0, 4096)
	for {
		_, r, err := ws.NextReader()
		if err != nil {
			return err
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
				return err
			}
		}
		if proto == "cf" && bytes.Equal(bytes.TrimSpace(buf), []byte("{}")) {
			_ = ws.WriteMessage(websocket.TextMessage, []byte("{}"))
			continue
		}
		if f != nil {
			f(buf)
		}
	}
}

// waitGo prints SUBSCRIBED and waits for the driver's go.
func waitGo(c loadConfig, n int) {
	if c.Wait {
		fmt.Printf("SUBSCRIBED %d\n", n)
		_, _ = bufio.NewReader(os.Stdin).ReadString('\n')
	}
}

// serverCPU is the CPU time of the server and of the extra process.
func (c loadConfig) serverCPU() (float64, float64) {
	var a, b float64
	if c.ServerPid > 0 {
		a = procCPU(c.ServerPid)
	}
	if c.ExtraPid > 0 {
		b = procCPU(c.ExtraPid)
	}
	return a, b
}

func closeAll(conns []*websocket.Conn) {
	for _, ws := range conns {
		if ws != nil {
			ws.Close()
		}
	}
}

func quantileMs(v []float64, q float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	return s[min(int(q*float64(len(s))), len(s)-1)]
}

func medianInt(v []int) int {
	if len(v) == 0 {
		return 0
	}
	s := append([]int(nil), v...)
	sort.Ints(s)
	return s[len(s)/2]
}

// ---- presence10k

// runPresence subscribes Conns users to t0, then (unless -presence-off)
// asks for t0's presence presenceQueries times in each way.
func (lg *loadGen) runPresence() (loadResult, error) {
	c := lg.cfg
	res := loadResult{Conns: c.Conns}
	start := time.Now()
	conns, dialErrs, _ := dialMany(c.Conns, func(i int) (*websocket.Conn, error) {
		return dialUser(c, i, "u"+strconv.Itoa(i), presenceTopic, nil)
	})
	res.ConnectSeconds = time.Since(start).Seconds()
	res.DialErrors = dialErrs
	var readers sync.WaitGroup
	for _, ws := range conns {
		if ws != nil {
			res.Subscribed++
			readers.Add(1)
			go func() { defer readers.Done(); eachFrame(ws, c.Proto, nil) }()
		}
	}
	defer func() { closeAll(conns); readers.Wait() }()
	waitGo(c, res.Subscribed)
	if c.PresenceOff {
		return res, nil
	}
	// Queriers: connections of users of their own, not subscribed to t0.
	queriers := make([]*websocket.Conn, 8)
	for k := range queriers {
		ws, err := dialUser(c, k, "q"+strconv.Itoa(k), "", nil)
		if err != nil {
			return res, fmt.Errorf("querier: %w", err)
		}
		defer ws.Close()
		queriers[k] = ws
	}
	httpc := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 8, DisableCompression: true}}
	restURL := c.URL + "/topics/" + presenceTopic + "/presence"
	if c.Proto == "cf" {
		restURL = c.URL + "/bench/presence?channel=" + presenceTopic
	}
	var nextID atomic.Int64
	nextID.Store(10)
	wsQuery := func(ws *websocket.Conn) ([]byte, error) {
		id := strconv.FormatInt(nextID.Add(1), 10)
		var q string
		if c.Proto == "cf" {
			q = `{"id":` + id + `,"presence":{"channel":"` + presenceTopic + `"}}`
		} else {
			q = `{"type":"presence","topic":"` + presenceTopic + `","id":` + id + `}`
		}
		if err := ws.WriteMessage(websocket.TextMessage, []byte(q)); err != nil {
			return nil, err
		}
		_ = ws.SetReadDeadline(time.Now().Add(30 * time.Second))
		defer ws.SetReadDeadline(time.Time{})
		for range 100 {
			_, msg, err := ws.ReadMessage()
			if err != nil {
				return nil, err
			}
			if !bytes.Contains(msg, []byte(`"id":`+id+`,`)) && !bytes.Contains(msg, []byte(`"id":`+id+`}`)) {
				continue
			}
			if bytes.Contains(msg, []byte(`"error"`)) {
				return nil, fmt.Errorf("%.200s", msg)
			}
			return msg, nil
		}
		return nil, fmt.Errorf("no answer")
	}
	restQuery := func() ([]byte, error) {
		req, _ := http.NewRequest(http.MethodGet, restURL, nil)
		req.Header.Set("Authorization", "Bearer "+benchToken)
		resp, err := httpc.Do(req)
		if err != nil {
			return nil, err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err == nil && resp.StatusCode != http.StatusOK {
			err = fmt.Errorf("status %d: %.200s", resp.StatusCode, b)
		}
		return b, err
	}
	pr := &presenceResultT{}
	for _, ph := range []struct {
		name string
		conc int
	}{{"ws", 1}, {"rest", 1}, {"ws", 8}, {"rest", 8}} {
		p := presencePhase{Name: ph.name, Conc: ph.conc, Queries: presenceQueries}
		var mu sync.Mutex
		var lat []float64
		var sizes, clients, reported []int
		var wg sync.WaitGroup
		cpu0, _ := c.serverCPU()
		t0 := time.Now()
		for k := range ph.conc {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for range presenceQueries / ph.conc {
					qs := time.Now()
					var b []byte
					var err error
					if ph.name == "ws" {
						b, err = wsQuery(queriers[k])
					} else {
						b, err = restQuery()
					}
					d := time.Since(qs)
					mu.Lock()
					if err != nil {
						p.Errors++
						if p.FirstErr == "" {
							p.FirstErr = err.Error()
						}
					} else {
						lat = append(lat, float64(d)/1e6)
						sizes = append(sizes, len(b))
						clients = append(clients, bytes.Count(b, []byte(`"user":"`)))
						reported = append(reported, jsonInt(b, `"connections":`))
					}
					mu.Unlock()
					if err != nil && time.Since(t0) > time.Minute {
						return
					}
				}
			}()
		}
		wg.Wait()
		p.Seconds = time.Since(t0).Seconds()
		cpu1, _ := c.serverCPU()
		p.CPU = cpu1 - cpu0
		p.P50Ms, p.P99Ms = quantileMs(lat, 0.5), quantileMs(lat, 0.99)
		p.Bytes, p.Clients, p.Reported = medianInt(sizes), medianInt(clients), medianInt(reported)
		if p.FirstErr != "" {
			log.Printf("load: presence %s×%d: %d errors, first: %s", ph.name, ph.conc, p.Errors, p.FirstErr)
		}
		pr.Phases = append(pr.Phases, p)
	}
	res.Presence = pr
	return res, nil
}

type presenceResultT struct {
	Phases []presencePhase `json:"phases"`
}

// jsonInt reads the number after key in b (-1 if absent).
func jsonInt(b []byte, key string) int {
	i := bytes.Index(b, []byte(key))
	if i < 0 {
		return -1
	}
	b = b[i+len(key):]
	n := 0
	j := 0
	for j < len(b) && b[j] >= '0' && b[j] <= '9' {
		n = n*10 + int(b[j]-'0')
		j++
	}
	if j == 0 {
		return -1
	}
	return n
}

// ---- joinstorm

var (
	ftJoin  = []byte(`"type":"join"`)
	ftLeave = []byte(`"type":"leave"`)
	cfJoin  = []byte(`"join":{`)
	cfLeave = []byte(`"leave":{`)
	userKey = []byte(`"user":"`)
)

// scanEvents calls f for each join or leave in a frame (a firetower batch,
// or Centrifuge's newline-separated pushes) with the user it names.
func scanEvents(b []byte, proto string, f func(join bool, user []byte)) {
	join, leave := ftJoin, ftLeave
	if proto == "cf" {
		join, leave = cfJoin, cfLeave
	}
	for len(b) > 0 {
		i, j := bytes.Index(b, join), bytes.Index(b, leave)
		isJoin := i >= 0 && (j < 0 || i < j)
		k := j
		if isJoin {
			k = i
		}
		if k < 0 {
			return
		}
		b = b[k:]
		u := bytes.Index(b, userKey)
		if u < 0 {
			return
		}
		b = b[u+len(userKey):]
		e := bytes.IndexByte(b, '"')
		if e < 0 {
			return
		}
		f(isJoin, b[:e])
		b = b[e:]
	}
}

// runJoinStorm: Observers users subscribe to t0 and stay; then Rate new
// users a second for Duration each open a connection, subscribe to t0 and,
// a second after the subscribe was sent, close it. Every observer must see
// each joiner's join and leave once.
func (lg *loadGen) runJoinStorm() (loadResult, error) {
	c := lg.cfg
	res := loadResult{Conns: c.Observers}
	n := c.Rate * int(c.Duration/time.Second)
	jr := &joinResult{Observers: c.Observers, Joiners: n}
	joins := make([][]uint8, c.Observers)
	leaves := make([][]uint8, c.Observers)
	for k := range joins {
		joins[k], leaves[k] = make([]uint8, n), make([]uint8, n)
	}
	sent := make([]atomic.Int64, n)
	acked := make([]atomic.Bool, n)
	var jh hist
	var progress atomic.Int64 // observer events of joiners
	var stray, obsDisc, joinerEvents atomic.Int64
	var stopping atomic.Bool
	var obsErr atomic.Value

	obs, dialErrs, fe := dialMany(c.Observers, func(i int) (*websocket.Conn, error) {
		return dialUser(c, i, "o"+strconv.Itoa(i), presenceTopic, nil)
	})
	if dialErrs > 0 {
		return res, fmt.Errorf("observers: %d dial errors: %s", dialErrs, fe)
	}
	var readers sync.WaitGroup
	for k, ws := range obs {
		res.Subscribed++
		readers.Add(1)
		go func() {
			defer readers.Done()
			err := eachFrame(ws, c.Proto, func(b []byte) {
				now := time.Now().UnixNano()
				scanEvents(b, c.Proto, func(join bool, user []byte) {
					if len(user) < 2 || user[0] != 'j' {
						return
					}
					id, err := strconv.Atoi(string(user[1:]))
					if err != nil || id < 0 || id >= n {
						stray.Add(1)
						return
					}
					progress.Add(1)
					if join {
						if joins[k][id] < 255 {
							joins[k][id]++
						}
						if joins[k][id] == 1 {
							if s := sent[id].Load(); s > 0 {
								jh.record(k, now-s)
							}
						}
					} else if leaves[k][id] < 255 {
						leaves[k][id]++
					}
				})
			})
			if !stopping.Load() && obsDisc.Add(1) == 1 {
				obsErr.Store(err.Error())
			}
		}()
	}
	defer func() { stopping.Store(true); closeAll(obs); readers.Wait() }()
	waitGo(c, res.Subscribed)
	cpu0, x0 := c.serverCPU()

	// The joiners, on a fixed schedule; at most 4,000 in flight.
	interval := time.Second / time.Duration(c.Rate)
	start := time.Now()
	sem := make(chan struct{}, 4000)
	var jwg sync.WaitGroup
	var jerrs atomic.Int64
	var jfirst atomic.Value
	var lastAck atomic.Int64
	for i := range n {
		time.Sleep(time.Until(start.Add(time.Duration(i) * interval)))
		select {
		case sem <- struct{}{}:
		case <-time.After(10 * time.Second):
			jerrs.Add(1)
			continue
		}
		jwg.Add(1)
		go func() {
			defer jwg.Done()
			defer func() { <-sem }()
			ws, err := dialUser(c, c.Observers+i, "j"+strconv.Itoa(i), presenceTopic, &sent[i])
			if err != nil {
				if jerrs.Add(1) == 1 {
					jfirst.Store(err.Error())
				}
				return
			}
			acked[i].Store(true)
			lastAck.Store(time.Now().UnixNano())
			done := make(chan struct{})
			go func() {
				defer close(done)
				eachFrame(ws, c.Proto, func(b []byte) {
					joinerEvents.Add(int64(bytes.Count(b, []byte(`"user":"`))))
				})
			}()
			time.Sleep(time.Until(time.Unix(0, sent[i].Load()).Add(time.Second)))
			_ = ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(time.Second))
			ws.Close()
			<-done
		}()
	}
	jwg.Wait()
	jr.StormSeconds = float64(lastAck.Load()-start.UnixNano()) / 1e9
	for i := range n {
		if acked[i].Load() {
			jr.Subscribed++
		}
	}
	jr.DialErrors = int(jerrs.Load())
	if e, ok := jfirst.Load().(string); ok {
		jr.FirstErr = e
		log.Printf("joinstorm: %d joiner errors, first: %s", jr.DialErrors, e)
	}
	// Settle: every observer should get a join and a leave of each joiner
	// (firetower's leaves come PresenceGrace, 3 s, after the close). Give up
	// after 5 s without an event, at most 60 s.
	want := int64(2 * jr.Subscribed * c.Observers)
	last, lastChange := progress.Load(), time.Now()
	deadline := time.Now().Add(60 * time.Second)
	for progress.Load() < want && time.Since(lastChange) < 5*time.Second && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
		if p := progress.Load(); p != last {
			last, lastChange = p, time.Now()
		}
	}
	time.Sleep(200 * time.Millisecond) // duplicates that were on their way
	jr.SettleSeconds = time.Since(start).Seconds()
	cpu1, x1 := c.serverCPU()
	jr.CPU, jr.ExtraCPU = cpu1-cpu0, x1-x0
	stopping.Store(true)
	closeAll(obs)
	readers.Wait()
	for k := range joins {
		for i := range n {
			j, l := int64(joins[k][i]), int64(leaves[k][i])
			if !acked[i].Load() {
				stray.Add(j + l)
				continue
			}
			jr.Joins += j
			jr.Leaves += l
			switch {
			case j == 0:
				jr.JoinLost++
			case j > 1:
				jr.JoinDup += j - 1
			}
			switch {
			case l == 0:
				jr.LeaveLost++
			case l > 1:
				jr.LeaveDup += l - 1
			}
		}
	}
	jr.Stray = stray.Load()
	jr.JoinerFrames = joinerEvents.Load()
	jr.ObserverDisconnects = obsDisc.Load()
	if e, ok := obsErr.Load().(string); ok {
		jr.ObserverErr = e
		log.Printf("joinstorm: %d observers disconnected, first: %s", jr.ObserverDisconnects, e)
	}
	jr.P50Ms = jh.quantile(0.5) / 1e6
	jr.P99Ms = jh.quantile(0.99) / 1e6
	res.Join = jr
	return res, nil
}

// ---- users1k

type usersCounter struct {
	delivered atomic.Int64
	expected  atomic.Int64
	h         hist
}

// runUsers connects Conns users (each subscribed to t0 too, so that its
// user subscription is in place when the subscribe is acknowledged), then
// publishes to them: "all", requests naming all users; "each", requests
// naming one, round robin; each for Duration with at most Window
// undelivered messages per user in flight.
func (lg *loadGen) runUsers() (loadResult, error) {
	c := lg.cfg
	res := loadResult{Conns: c.Conns}
	conns, dialErrs, _ := dialMany(c.Conns, func(i int) (*websocket.Conn, error) {
		return dialUser(c, i, "u"+strconv.Itoa(i), presenceTopic, nil)
	})
	res.DialErrors = dialErrs
	var cur atomic.Pointer[usersCounter]
	cur.Store(&usersCounter{})
	var readers sync.WaitGroup
	var users []string
	for i, ws := range conns {
		if ws == nil {
			continue
		}
		res.Subscribed++
		users = append(users, "u"+strconv.Itoa(i))
		readers.Add(1)
		go func() {
			defer readers.Done()
			eachFrame(ws, c.Proto, func(b []byte) {
				now := time.Now().UnixNano()
				uc := cur.Load()
				m := 0
				for {
					k := bytes.Index(b, tsKey)
					if k < 0 {
						break
					}
					b = b[k+len(tsKey):]
					var ts int64
					j := 0
					for j < len(b) && b[j] >= '0' && b[j] <= '9' {
						ts = ts*10 + int64(b[j]-'0')
						j++
					}
					b = b[j:]
					uc.h.record(i, now-ts)
					m++
				}
				uc.delivered.Add(int64(m))
			})
		}()
	}
	defer func() { closeAll(conns); readers.Wait() }()
	waitGo(c, res.Subscribed)
	if len(users) == 0 {
		return res, fmt.Errorf("no user connected")
	}
	httpc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		MaxIdleConnsPerHost: c.Publishers, MaxConnsPerHost: c.Publishers, DisableCompression: true}}
	allList := `"` + strings.Join(users, `","`) + `"`
	pad := strings.Repeat("x", max(c.Size-len(`{"ts":1700000000000000000,"seq":100000,"p":""}`), 0))
	for _, name := range []string{"all", "each"} {
		uc := &usersCounter{}
		cur.Store(uc)
		p := usersPhase{Name: name}
		pubs := c.Publishers
		if name == "all" {
			pubs = 4
		}
		limit := int64(c.Window) * int64(len(users))
		var seq, reqs, errs atomic.Int64
		cpu0, _ := c.serverCPU()
		t0 := time.Now()
		deadline := t0.Add(c.Duration)
		var wg sync.WaitGroup
		for range pubs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for time.Now().Before(deadline) && errs.Load() < 100 {
					waitFrom := time.Now()
					for uc.expected.Load()-uc.delivered.Load() > limit && time.Since(waitFrom) < time.Second {
						time.Sleep(50 * time.Microsecond)
					}
					s := seq.Add(1)
					list, k := allList, int64(len(users))
					if name == "each" {
						list, k = `"`+users[int(s)%len(users)]+`"`, 1
					}
					uc.expected.Add(k)
					body := fmt.Sprintf(`{"users":[%s],"data":{"ts":%d,"seq":%d,"p":"%s"}}`, list, time.Now().UnixNano(), s, pad)
					req, _ := http.NewRequest(http.MethodPost, c.URL+"/publish", strings.NewReader(body))
					req.Header.Set("Authorization", "Bearer "+benchToken)
					req.Header.Set("Content-Type", "application/json")
					resp, err := httpc.Do(req)
					if err == nil {
						_, _ = io.Copy(io.Discard, resp.Body)
						resp.Body.Close()
						if resp.StatusCode != http.StatusOK {
							err = fmt.Errorf("status %d", resp.StatusCode)
						}
					}
					if err != nil {
						uc.expected.Add(-k)
						if errs.Add(1) == 1 {
							log.Printf("load: users publish: %v", err)
						}
						continue
					}
					reqs.Add(1)
				}
			}()
		}
		wg.Wait()
		pubEnd := time.Now()
		last, lastChange := uc.delivered.Load(), time.Now()
		for uc.delivered.Load() < uc.expected.Load() && time.Since(lastChange) < 3*time.Second {
			time.Sleep(5 * time.Millisecond)
			if d := uc.delivered.Load(); d != last {
				last, lastChange = d, time.Now()
			}
		}
		end := time.Now()
		if uc.delivered.Load() < uc.expected.Load() {
			end = lastChange
		}
		cpu1, _ := c.serverCPU()
		p.CPU = cpu1 - cpu0
		p.Requests, p.Errors = reqs.Load(), errs.Load()
		p.Expected, p.Delivered = uc.expected.Load(), uc.delivered.Load()
		p.Lost = p.Expected - p.Delivered
		if end.Before(pubEnd) {
			end = pubEnd
		}
		p.Seconds = end.Sub(t0).Seconds()
		p.DPS = float64(p.Delivered) / p.Seconds
		p.P50Ms, p.P99Ms = uc.h.quantile(0.5)/1e6, uc.h.quantile(0.99)/1e6
		res.Users = append(res.Users, p)
		time.Sleep(500 * time.Millisecond)
	}
	return res, nil
}
