package firetower

import "time"

// housekeeping visits every connection once a tick (half a second, or
// PingInterval if shorter) until Shutdown: it retires writers parked for a
// whole tick and, every PingInterval, has each connection pinged. One loop
// for the node instead of a ticker and a timer per connection; each ping is
// written by the connection's own writer (started for it if idle), so a
// slow connection never delays the others' pings. A connection that does
// not answer within PongTimeout is closed by its read deadline.
func (t *Tower) housekeeping() {
	every := min(500*time.Millisecond, t.cfg.PingInterval)
	pingEvery := max(1, int(t.cfg.PingInterval/every))
	tick := time.NewTicker(every)
	defer tick.Stop()
	var conns []*Conn
	for n := 1; ; n++ {
		select {
		case <-t.stopPings:
			return
		case <-tick.C:
		}
		t.mu.Lock()
		conns = conns[:0]
		for c := range t.conns {
			conns = append(conns, c)
		}
		t.mu.Unlock()
		ping := n%pingEvery == 0
		for _, c := range conns {
			c.housekeep(ping)
		}
		clear(conns)
	}
}
