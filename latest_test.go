package firetower

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// rawDial opens a WebSocket that nobody reads until the test does.
func rawDial(t *testing.T, s *server) *websocket.Conn {
	t.Helper()
	ws, _, err := websocket.DefaultDialer.Dial(s.wsURL(""), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ws.Close() })
	return ws
}

func readFrame(t *testing.T, ws *websocket.Conn) (frame, error) {
	t.Helper()
	ws.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, b, err := ws.ReadMessage()
	if err != nil {
		return frame{}, err
	}
	var f frame
	if err := json.Unmarshal(b, &f); err != nil {
		t.Fatalf("frame %s: %v", b, err)
	}
	f.raw = b
	return f, nil
}

// pad is data big enough that a client that does not read fills the
// socket buffers, then its send queue, quickly.
var pad = strings.Repeat("x", 8<<10)

func TestLatestValueSlowReader(t *testing.T) {
	cfg := historyConfig(10)
	cfg.SendQueueSize = 8
	s := newServer(t, cfg)
	if _, err := s.tower.Publish(context.Background(), "/l/price", map[string]any{"n": 0, "pad": pad}); err != nil {
		t.Fatal(err)
	}
	ws := rawDial(t, s)
	ws.WriteMessage(websocket.TextMessage, []byte(`{"type":"subscribe","topic":"/l/price"}`))
	if f, err := readFrame(t, ws); err != nil || f.Type != TypeSubscribed {
		t.Fatalf("subscribed: %s %v", f.raw, err)
	}
	// The current value right after the reply.
	if f, err := readFrame(t, ws); err != nil || f.Offset != 1 || !strings.Contains(string(f.Data), `"n":0`) {
		t.Fatalf("current value: %s %v", f.raw, err)
	}
	// The value changes far faster than the client reads (it reads
	// nothing meanwhile): its queue of 8 would overflow many times over.
	const changes = 3000
	for n := 1; n <= changes; n++ {
		if _, err := s.tower.Publish(context.Background(), "/l/price", map[string]any{"n": n, "pad": pad}); err != nil {
			t.Fatal(err)
		}
	}
	// Now it reads, slowly: it gets fewer frames than values, in order,
	// and ends with the latest one, still connected.
	got, lastN := 0, -1
	for lastN != changes {
		f, err := readFrame(t, ws)
		if err != nil {
			t.Fatalf("after %d frames (last value %d): %v", got, lastN, err)
		}
		var v struct{ N int }
		json.Unmarshal(f.Data, &v)
		if v.N <= lastN {
			t.Fatalf("value %d after %d", v.N, lastN)
		}
		lastN = v.N
		got++
		time.Sleep(time.Millisecond)
	}
	if got >= changes/2 {
		t.Fatalf("%d frames for %d values: not replaced", got, changes)
	}
	st := s.tower.Stats()
	if st.SlowClosed != 0 || st.ReplacedLatest == 0 {
		t.Fatalf("stats: slow closed %d, replaced %d", st.SlowClosed, st.ReplacedLatest)
	}
	t.Logf("%d frames for %d values; %d replaced", got, changes, st.ReplacedLatest)
}

// TestSlowClientRecovers: a client closed with 1008 for reading too
// slowly on a history topic reconnects and recovers all it missed.
func TestSlowClientRecovers(t *testing.T) {
	cfg := historyConfig(5000)
	cfg.SendQueueSize = 8
	s := newServer(t, cfg)
	ws := rawDial(t, s)
	ws.WriteMessage(websocket.TextMessage, []byte(`{"type":"subscribe","topic":"/h/feed"}`))
	f, err := readFrame(t, ws)
	if err != nil || f.Type != TypeSubscribed {
		t.Fatalf("subscribed: %s %v", f.raw, err)
	}
	epoch := f.Streams["/h/feed"].Epoch
	const total = 3000
	for n := 1; n <= total; n++ {
		if _, err := s.tower.Publish(context.Background(), "/h/feed", map[string]any{"n": n, "pad": pad}); err != nil {
			t.Fatal(err)
		}
	}
	// It reads what reached it, then the close.
	var last uint64
	var closeErr *websocket.CloseError
	for {
		f, err := readFrame(t, ws)
		if err != nil {
			// 1008, or a cut connection (1006) when the writer was stuck
			// in a write to this client, which reads nothing: either way
			// the node closed it as too slow.
			if errors.As(err, &closeErr) && closeErr.Code != websocket.ClosePolicyViolation && closeErr.Code != websocket.CloseAbnormalClosure {
				t.Fatalf("want a close with 1008, got %v", err)
			}
			break
		}
		if f.Offset != last+1 {
			t.Fatalf("offset %d after %d before the close", f.Offset, last)
		}
		last = f.Offset
	}
	if last >= total {
		t.Fatalf("the client got all %d before it was closed: the test proves nothing", total)
	}
	waitUntil(t, func() bool { return s.tower.Stats().SlowClosed == 1 })
	ws2 := rawDial(t, s)
	ws2.WriteMessage(websocket.TextMessage, []byte(fmt.Sprintf(`{"type":"subscribe","topic":"/h/feed","since":{"/h/feed":{"epoch":%q,"offset":%d}}}`, epoch, last)))
	f, err = readFrame(t, ws2)
	if st := f.Streams["/h/feed"]; err != nil || st.Recovered == nil || !*st.Recovered || st.Offset != total {
		t.Fatalf("resubscribe: %s %v", f.raw, err)
	}
	missed := total - int(last)
	for want := last + 1; want <= total; want++ {
		f, err := readFrame(t, ws2)
		if err != nil || f.Offset != want {
			t.Fatalf("recovering: got %s %v, want offset %d", f.raw, err, want)
		}
	}
	t.Logf("closed with 1008 after %d messages, recovered the %d missed", last, missed)
}

// waitUntil waits up to 5 s for cond.
func waitUntil(t *testing.T, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); !cond(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 5s")
		}
	}
}
