package server_test

import (
	"bufio"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/OSMeteor/firetower/broker"
	"github.com/OSMeteor/firetower/broker/brokertest"
	"github.com/OSMeteor/firetower/topicsvc/client"
	"github.com/OSMeteor/firetower/topicsvc/internal/svctest"
	pb "github.com/OSMeteor/firetower/topicsvc/topicsvcpb"
	"google.golang.org/grpc/codes"
)

// scrape reads the service's /metrics over HTTP into a map from
// `name{labels}` (as exposed) to value.
func scrape(t testing.TB, url string) map[string]float64 {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("scraping %s: %v", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("scraping %s: status %s", url, resp.Status)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
		t.Fatalf("scraping %s: content type %q", url, ct)
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("scraping %s: line %q: %v", url, line, err)
		}
		out[line[:i]] = v
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// metricsAre checks that the scraped series hold exactly want.
func metricsAre(t testing.TB, url string, want map[string]float64) func() error {
	return func() error {
		got := scrape(t, url)
		var diff []string
		for k, v := range want {
			g, ok := got[k]
			switch {
			case !ok:
				diff = append(diff, fmt.Sprintf("%s missing, want %v", k, v))
			case g != v:
				diff = append(diff, fmt.Sprintf("%s = %v, want %v", k, g, v))
			}
		}
		if diff != nil {
			sort.Strings(diff)
			return fmt.Errorf("metrics:\n  %s", strings.Join(diff, "\n  "))
		}
		return nil
	}
}

// TestMetrics runs a known workload through a service process started with
// -metrics-listen and scrapes /metrics over HTTP for the exact figures.
func TestMetrics(t *testing.T) {
	svc := svctest.Start(t, "127.0.0.1:0", "-metrics-listen", "127.0.0.1:0")
	url := svc.MetricsURL(t)
	t.Logf("metrics at %s", url)
	ctx := svctest.Ctx(t)

	// Before anything happens: every series is there, at zero.
	zero := map[string]float64{
		`firetower_topicsvc_nodes`:                                              0,
		`firetower_topicsvc_topics`:                                             0,
		`firetower_topicsvc_messages_published_total{source="node"}`:            0,
		`firetower_topicsvc_node_disconnects_total{reason="slow"}`:              0,
		`firetower_topicsvc_node_disconnects_total{reason="heartbeat_timeout"}`: 0,
		`firetower_topicsvc_refused_total{reason="auth"}`:                       0,
		`firetower_topicsvc_api_calls_total{method="Publish"}`:                  0,
	}
	must(t, metricsAre(t, url, zero)())
	if got := scrape(t, url); got["process_resident_memory_bytes"] <= 0 || got["go_goroutines"] <= 0 {
		t.Fatalf("no process or Go runtime figures: %v, %v", got["process_resident_memory_bytes"], got["go_goroutines"])
	}

	// Two nodes listen to one topic; one publishes 10 messages, a backend
	// one more through the push API.
	const topic = "/metrics/room"
	a := svctest.DialNode(t, svc.Addr, client.Options{})
	b := svctest.DialNode(t, svc.Addr, client.Options{})
	must(t, a.Subscribe(ctx, topic))
	must(t, b.Subscribe(ctx, topic))
	must(t, b.Subscribe(ctx, "/metrics/other"))
	a.SetCount(topic, 3)
	b.SetCount(topic, 4)
	data := []byte(`{"n":12345}`) // 11 bytes
	for i := range 10 {
		must(t, a.Publish(ctx, broker.Message{Topic: topic, ID: strconv.Itoa(i), Data: data}))
	}
	api := pushClient(t, svc.Addr)
	_, err := api.Publish(withToken(ctx, svctest.Token), &pb.PublishRequest{Topic: topic, Data: `"hi"`}) // 4 bytes
	must(t, err)
	_, err = api.Count(withToken(ctx, svctest.Token), &pb.CountRequest{Topic: topic})
	must(t, err)
	_, err = api.Publish(withToken(ctx, "wrong"), &pb.PublishRequest{Topic: topic, Data: `1`})
	wantCode(t, err, codes.Unauthenticated, "publish with a wrong token")
	_, err = api.Publish(withToken(ctx, svctest.Token), &pb.PublishRequest{Topic: topic, Data: `not json`})
	wantCode(t, err, codes.InvalidArgument, "publish of invalid JSON")
	a.Rec.WaitN(t, 11, 5*time.Second)
	b.Rec.WaitN(t, 11, 5*time.Second)

	const bytes = 10*11 + 4
	brokertest.Eventually(t, 5*time.Second, metricsAre(t, url, map[string]float64{
		`firetower_topicsvc_nodes`:                                   2,
		`firetower_topicsvc_topics`:                                  2,
		`firetower_topicsvc_subscriptions`:                           3,
		`firetower_topicsvc_subscribers`:                             7,
		`firetower_topicsvc_node_sessions_total`:                     2,
		`firetower_topicsvc_messages_published_total{source="node"}`: 10,
		`firetower_topicsvc_messages_published_total{source="api"}`:  1,
		`firetower_topicsvc_published_bytes_total`:                   bytes,
		`firetower_topicsvc_messages_routed_total`:                   22,
		`firetower_topicsvc_messages_delivered_total`:                22,
		`firetower_topicsvc_delivered_bytes_total`:                   2 * bytes,
		`firetower_topicsvc_queued_operations`:                       0,
		`firetower_topicsvc_api_calls_total{method="Publish"}`:       2,
		`firetower_topicsvc_api_calls_total{method="Count"}`:         1,
		`firetower_topicsvc_api_calls_total{method="Topics"}`:        0,
		`firetower_topicsvc_refused_total{reason="auth"}`:            1,
		`firetower_topicsvc_refused_total{reason="invalid"}`:         1,
		`firetower_topicsvc_node_disconnects_total{reason="left"}`:   0,
	}))
	got := scrape(t, url)
	if in, out := got[`firetower_topicsvc_frames_received_total`], got[`firetower_topicsvc_frames_sent_total`]; in < 2 || out < 2 {
		t.Fatalf("frames received %v, sent %v: want at least one per session", in, out)
	}

	// A node that closes its broker has left; a session replaced by a new
	// one of the same node id, and a session that starts without a hello,
	// are counted by reason.
	must(t, a.Close())
	raw1, err := api.Session(withToken(ctx, svctest.Token))
	must(t, err)
	must(t, raw1.Send(&pb.NodeFrame{Ops: []*pb.NodeOp{{Op: &pb.NodeOp_Hello{Hello: &pb.Hello{NodeId: "raw"}}}}}))
	_, err = raw1.Recv() // the welcome
	must(t, err)
	hello := func() (pb.TopicService_SessionClient, error) {
		raw, err := api.Session(withToken(ctx, svctest.Token))
		must(t, err)
		must(t, raw.Send(&pb.NodeFrame{Ops: []*pb.NodeOp{{Op: &pb.NodeOp_Hello{Hello: &pb.Hello{NodeId: "raw"}}}}}))
		_, err = raw.Recv()
		return raw, err
	}
	// While raw1 is live, its id is refused; once it has been silent for
	// half the heartbeat timeout, a new session replaces it.
	_, err = hello()
	wantCode(t, err, codes.AlreadyExists, "a second session of a live node id")
	time.Sleep(2600 * time.Millisecond)
	_, err = hello()
	must(t, err)
	for {
		if _, err := raw1.Recv(); err != nil {
			break // ended by the service: replaced
		}
	}
	bad, err := api.Session(withToken(ctx, svctest.Token))
	must(t, err)
	must(t, bad.Send(&pb.NodeFrame{Ops: []*pb.NodeOp{{Op: &pb.NodeOp_Heartbeat{Heartbeat: &pb.Heartbeat{}}}}}))
	_, err = bad.Recv()
	wantCode(t, err, codes.InvalidArgument, "a session without hello")
	brokertest.Eventually(t, 5*time.Second, metricsAre(t, url, map[string]float64{
		`firetower_topicsvc_nodes`:                                         2, // b and raw2
		`firetower_topicsvc_topics`:                                        2,
		`firetower_topicsvc_subscriptions`:                                 2,
		`firetower_topicsvc_subscribers`:                                   4,
		`firetower_topicsvc_node_sessions_total`:                           4,
		`firetower_topicsvc_node_disconnects_total{reason="left"}`:         1,
		`firetower_topicsvc_node_disconnects_total{reason="replaced"}`:     1,
		`firetower_topicsvc_node_disconnects_total{reason="stream_error"}`: 0,
		`firetower_topicsvc_node_disconnects_total{reason="slow"}`:         0,
		`firetower_topicsvc_refused_total{reason="invalid"}`:               3,
	}))
}

// TestMetricsConfig: metrics are off by default, on with the environment
// variable too, and a bad address stops the service at start.
func TestMetricsConfig(t *testing.T) {
	svc := svctest.Start(t, "127.0.0.1:0")
	nd := svctest.DialNode(t, svc.Addr, client.Options{})
	must(t, nd.Subscribe(svctest.Ctx(t), "x")) // the service is well up by now
	if strings.Contains(svc.Logs(), "metrics listening") {
		t.Fatalf("metrics served without -metrics-listen:\n%s", svc.Logs())
	}

	t.Setenv("FIRETOWER_TOPICSVC_METRICS_LISTEN", "127.0.0.1:0")
	svc = svctest.Start(t, "127.0.0.1:0")
	if got := scrape(t, svc.MetricsURL(t)); got["firetower_topicsvc_nodes"] != 0 {
		t.Fatalf("nodes = %v", got["firetower_topicsvc_nodes"])
	}

	cmd := exec.Command(svctest.Bin(), "-listen", "127.0.0.1:0", "-token", svctest.Token, "-metrics-listen", "127.0.0.1:notaport")
	cmd.Env = append(os.Environ(), "FIRETOWER_TOPICSVC_METRICS_LISTEN=")
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "metrics:") {
		t.Fatalf("a bad metrics address: err %v, output %q", err, out)
	}
}
