package topicsvc_test

import (
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/OSMeteor/firetower/broker"
	"github.com/OSMeteor/firetower/broker/brokertest"
	"github.com/OSMeteor/firetower/topicsvc"
	"github.com/OSMeteor/firetower/topicsvc/client"
	"github.com/OSMeteor/firetower/topicsvc/internal/svctest"
	"github.com/OSMeteor/firetower/topicsvc/server"
)

// BenchmarkCrossNode measures deliveries per second from a publishing node
// to a subscribed node: through the embedded core (one process, the
// single-node figure), through a service process over loopback gRPC
// (1 service + 2 nodes), and through a service served in the test process
// (so that a -cpuprofile covers the service too).
//
//	go test ./topicsvc -run '^$' -bench CrossNode -benchtime 200000x
//
// Besides deliveries/s it reports the CPU time spent per delivery: by the
// two nodes (node-cpu-ns/op: the test process) and by the service process
// (svc-cpu-ns/op). On a shared machine those move less than the rate does.
func BenchmarkCrossNode(b *testing.B) {
	b.Run("embedded", func(b *testing.B) {
		core := topicsvc.NewCore()
		benchPair(b, core.Embedded(), core.Embedded(), 0)
	})
	b.Run("topicsvc", func(b *testing.B) {
		svc := svctest.Start(b, "127.0.0.1:0")
		dial := func() broker.Broker {
			c, err := client.Dial(svc.Addr, client.Options{Token: svctest.Token})
			if err != nil {
				b.Fatal(err)
			}
			return c
		}
		benchPair(b, dial(), dial(), svc.Cmd.Process.Pid)
	})
	b.Run("in-process", func(b *testing.B) {
		srv, err := server.New(server.Config{Token: svctest.Token})
		if err != nil {
			b.Fatal(err)
		}
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			b.Fatal(err)
		}
		served := make(chan struct{})
		go func() {
			defer close(served)
			srv.Serve(l)
		}()
		defer func() {
			srv.Stop()
			<-served
		}()
		dial := func() broker.Broker {
			c, err := client.Dial(l.Addr().String(), client.Options{Token: svctest.Token})
			if err != nil {
				b.Fatal(err)
			}
			return c
		}
		benchPair(b, dial(), dial(), 0)
	})
}

// benchPair runs the shared cross-node benchmark, reporting besides the
// rate the CPU time per delivery of this process (the nodes) and of the
// service process svcPid, if not 0.
func benchPair(b *testing.B, pub, sub broker.Broker, svcPid int) {
	brokertest.CrossNode(b, pub, sub, brokertest.BenchConfig{Measure: func() func() {
		ownCPU, svcCPU := processCPU(os.Getpid()), processCPU(svcPid)
		return func() {
			b.ReportMetric(float64(processCPU(os.Getpid())-ownCPU)/float64(b.N), "node-cpu-ns/op")
			if svcPid != 0 {
				b.ReportMetric(float64(processCPU(svcPid)-svcCPU)/float64(b.N), "svc-cpu-ns/op")
			}
		}
	}})
}

// processCPU returns the user and system CPU time pid has used, in
// nanoseconds, from /proc/<pid>/stat (0 where that cannot be read).
func processCPU(pid int) time.Duration {
	if pid == 0 {
		return 0
	}
	raw, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0
	}
	// Fields after the command name, which is in parentheses and may hold
	// spaces: utime and stime are the 12th and 13th.
	s := string(raw)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) < 13 {
		return 0
	}
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(utime+stime) * time.Second / clockTicks
}

// clockTicks is USER_HZ, the unit of /proc/<pid>/stat times: 100 on every
// Linux architecture Go supports.
const clockTicks = 100
