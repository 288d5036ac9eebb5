package firetower

import "time"

// pingLoop pings every connection each PingInterval, until Shutdown. One
// loop for the node instead of a ticker per connection; each ping is
// written by the connection's writer (started for it if idle), so a slow
// connection never delays the others' pings. A connection that does not
// answer within PongTimeout is closed by its read deadline.
func (t *Tower) pingLoop() {
	tick := time.NewTicker(t.cfg.PingInterval)
	defer tick.Stop()
	var conns []*Conn
	for {
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
		for _, c := range conns {
			c.ping()
		}
		clear(conns)
	}
}
