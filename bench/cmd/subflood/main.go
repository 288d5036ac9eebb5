// Command subflood measures what one client that subscribes and
// unsubscribes many topics per frame costs a node and a standalone topic
// service: it starts cmd/firetower-topicsvc and a node (this binary with
// -role node) on loopback, runs one WebSocket client at a fixed frame rate
// for a bounded time, and reads both processes' CPU time from /proc.
//
//	go build -o /tmp/topicsvc ../cmd/firetower-topicsvc   # from the repository root
//	go run ./cmd/subflood -topicsvc /tmp/topicsvc -duration 10s
//
// Linux only (/proc/<pid>/stat). Everything listens on 127.0.0.1.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/OSMeteor/firetower"
	_ "github.com/OSMeteor/firetower/topicsvc/client"
	"github.com/gin-gonic/gin"
	"github.com/gorilla/websocket"
)

func main() {
	role := flag.String("role", "driver", "driver, or node (started by the driver)")
	topicsvcBin := flag.String("topicsvc", "", "path of a built cmd/firetower-topicsvc (driver)")
	brokerURL := flag.String("broker", "", "topicsvc:// URL (node)")
	listen := flag.String("listen", "", "listen address (node)")
	duration := flag.Duration("duration", 10*time.Second, "how long the client runs, at most 60s")
	rate := flag.Float64("rate", 100, "frames per second the client sends (the default InboundRate)")
	topics := flag.Int("topics", 128, "topics per frame (the default MaxTopicsPerConn)")
	flag.Var(&limits, "limit", "Config field=value for the node, repeatable (SubscribeRate, InboundBytesRate)")
	flag.Parse()
	switch *role {
	case "node":
		runNode(*brokerURL, *listen)
	default:
		if *topicsvcBin == "" {
			log.Fatal("-topicsvc is required: the path of a built cmd/firetower-topicsvc")
		}
		runDriver(*topicsvcBin, min(*duration, time.Minute), *rate, *topics)
	}
}

const token = "subflood-token"

func runNode(brokerURL, listen string) {
	gin.SetMode(gin.ReleaseMode)
	cfg := firetower.Config{BrokerURL: brokerURL, BrokerToken: token}
	applyLimits(&cfg)
	tower, err := firetower.New(cfg)
	if err != nil {
		log.Fatal(err)
	}
	r := gin.New()
	r.Use(tower.Middleware())
	log.Fatal(http.ListenAndServe(listen, r))
}

func freeAddr() string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func start(name string, args ...string) *exec.Cmd {
	cmd := exec.Command(name, args...)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		log.Fatal(err)
	}
	return cmd
}

// cpu returns the process's user+system CPU time.
func cpu(pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		log.Fatal(err)
	}
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
	utime, _ := strconv.ParseInt(f[11], 10, 64) // field 14 of proc(5)
	stime, _ := strconv.ParseInt(f[12], 10, 64) // field 15
	const ticks = 100                           // USER_HZ on Linux
	return time.Duration(utime+stime) * time.Second / ticks
}

func runDriver(topicsvcBin string, duration time.Duration, rate float64, n int) {
	svcAddr, nodeAddr := freeAddr(), freeAddr()
	svc := start(topicsvcBin, "-listen", svcAddr, "-token", token)
	defer svc.Process.Kill()
	self, err := os.Executable()
	if err != nil {
		log.Fatal(err)
	}
	args := []string{"-role", "node", "-broker", "topicsvc://" + svcAddr, "-listen", nodeAddr}
	for _, l := range limits {
		args = append(args, "-limit", l)
	}
	node := start(self, args...)
	defer node.Process.Kill()

	var ws *websocket.Conn
	for deadline := time.Now().Add(10 * time.Second); ; {
		ws, _, err = websocket.DefaultDialer.Dial("ws://"+nodeAddr+"/ws", nil)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			log.Fatalf("node did not come up: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	defer ws.Close()
	var replies [4]atomic.Int64 // subscribed, unsubscribed, rate_limited, other
	go func() {
		for {
			_, b, err := ws.ReadMessage()
			if err != nil {
				return
			}
			var f struct{ Type, Code string }
			json.Unmarshal(b, &f)
			switch {
			case f.Type == "subscribed":
				replies[0].Add(1)
			case f.Type == "unsubscribed":
				replies[1].Add(1)
			case f.Code == "rate_limited":
				replies[2].Add(1)
			default:
				replies[3].Add(1)
			}
		}
	}()
	list := make([]string, n)
	for i := range list {
		list[i] = fmt.Sprintf("/flood/%03d", i)
	}
	frames := [2][]byte{}
	for i, typ := range []string{"subscribe", "unSubscribe"} {
		frames[i], _ = json.Marshal(map[string]any{"type": typ, "topic": strings.Join(list, ",")})
	}
	time.Sleep(time.Second) // both processes settle after their start
	svc0, node0, t0 := cpu(svc.Process.Pid), cpu(node.Process.Pid), time.Now()
	tick := time.NewTicker(time.Duration(float64(time.Second) / rate))
	defer tick.Stop()
	sent := 0
	for end := t0.Add(duration); time.Now().Before(end); sent++ {
		<-tick.C
		if err := ws.WriteMessage(websocket.TextMessage, frames[sent%2]); err != nil {
			log.Printf("client: %v", err)
			break
		}
	}
	time.Sleep(200 * time.Millisecond) // the last replies
	elapsed := time.Since(t0)
	svcCPU, nodeCPU := cpu(svc.Process.Pid)-svc0, cpu(node.Process.Pid)-node0
	fmt.Printf("client: %d frames of %d topics in %v (%.0f/s); replies: %d subscribed, %d unsubscribed, %d rate_limited, %d other\n",
		sent, n, elapsed.Round(time.Millisecond), float64(sent)/elapsed.Seconds(),
		replies[0].Load(), replies[1].Load(), replies[2].Load(), replies[3].Load())
	fmt.Printf("node:          %6.1f%% of a core (%v CPU)\n", 100*nodeCPU.Seconds()/elapsed.Seconds(), nodeCPU)
	fmt.Printf("topic service: %6.1f%% of a core (%v CPU)\n", 100*svcCPU.Seconds()/elapsed.Seconds(), svcCPU)
}

// limitFlags are the -limit flags.
type limitFlags []string

func (l *limitFlags) String() string     { return strings.Join(*l, ",") }
func (l *limitFlags) Set(v string) error { *l = append(*l, v); return nil }

var limits limitFlags
