package svctest

import (
	"net"
	"sync"
	"testing"
)

// Proxy is a TCP proxy in front of a service, for tests that make a
// node's connection die: Cut closes it at once, with a reset and no
// goodbye (a crashed node, a broken network), and Freeze makes it
// silent, forwarding nothing either way while it stays open (a node
// whose process or network stopped). Either way the proxy then refuses
// new connections, so the node never comes back through it.
type Proxy struct {
	// Addr is the address nodes dial instead of the service's.
	Addr string

	l      net.Listener
	target string

	mu     sync.Mutex
	conns  []*net.TCPConn
	frozen chan struct{} // closed by Freeze
	done   bool
	wg     sync.WaitGroup
}

// StartProxy starts a proxy to the service at target; it is closed at
// cleanup.
func StartProxy(t testing.TB, target string) *Proxy {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &Proxy{Addr: l.Addr().String(), l: l, target: target, frozen: make(chan struct{})}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(p.Cut)
	return p
}

func (p *Proxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.l.Accept()
		if err != nil {
			return
		}
		s, err := net.Dial("tcp", p.target)
		if err != nil {
			c.Close()
			continue
		}
		p.mu.Lock()
		if p.done {
			p.mu.Unlock()
			c.Close()
			s.Close()
			return
		}
		p.conns = append(p.conns, c.(*net.TCPConn), s.(*net.TCPConn))
		p.wg.Add(2)
		p.mu.Unlock()
		go p.pipe(s, c)
		go p.pipe(c, s)
	}
}

// pipe copies from src to dst until either fails, then closes both, as
// the end of a real connection reaches both ends; once frozen, it stops
// forwarding and holds both open until Cut.
func (p *Proxy) pipe(dst, src net.Conn) {
	defer p.wg.Done()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		select {
		case <-p.frozen:
			return // drop what was read: the link is silent from now on
		default:
		}
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				err = werr
			}
		}
		if err != nil {
			src.Close()
			dst.Close()
			return
		}
	}
}

// Freeze makes every connection through the proxy silent: nothing is
// forwarded any more either way, and nothing is closed until Cut (the
// test's cleanup at the latest). New connections are refused.
func (p *Proxy) Freeze() {
	p.mu.Lock()
	defer p.mu.Unlock()
	select {
	case <-p.frozen:
	default:
		close(p.frozen)
	}
	p.l.Close()
}

// Break resets the connections through the proxy now, as a network
// blip would, and goes on accepting: the nodes reconnect through it.
func (p *Proxy) Break() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		c.SetLinger(0)
		c.Close()
	}
	p.conns = nil
}

// Cut closes every connection through the proxy with a reset (no FIN, no
// goodbye at any layer) and refuses new ones; it is idempotent.
func (p *Proxy) Cut() {
	p.mu.Lock()
	p.done = true
	p.l.Close()
	for _, c := range p.conns {
		c.SetLinger(0)
		c.Close()
	}
	p.conns = nil
	p.mu.Unlock()
	p.wg.Wait()
}
