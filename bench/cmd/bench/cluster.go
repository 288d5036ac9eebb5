package main

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"time"
)

// clusterVariants are the cluster scenario's rows: one node as the
// reference, then two nodes joined by the topic service or by Redis, with
// every subscriber on one node and every publish sent to the other.
var clusterVariants = []string{"single", "topicsvc", "redis"}

var firetowerTarget = target{Name: "firetower", WSPath: "/ws?batch=1", Proto: "ft"}

// buildTopicsvc builds cmd/firetower-topicsvc of the root module into dir.
func buildTopicsvc(root, dir string) (string, error) {
	bin := filepath.Join(dir, "firetower-topicsvc")
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/firetower-topicsvc")
	cmd.Dir = root
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("building the topic service: %w", err)
	}
	return bin, nil
}

// runCluster runs one cluster row. Nothing is pinned: four processes share
// the two cores, and the single-node row runs unpinned too so the ratio
// compares like with like.
func runCluster(self string, sc scenario, variant, tsvcBin string) record {
	if variant == "single" {
		rec := runOne(self, false, sc, firetowerTarget, "", "")
		rec.Target = variant
		return rec
	}
	rec := record{Target: variant}
	port, err := freePort()
	if err != nil {
		rec.Err = err.Error()
		return rec
	}
	hostport := "127.0.0.1:" + strconv.Itoa(port)
	var helper *exec.Cmd
	var brokerURL string
	switch variant {
	case "topicsvc":
		if tsvcBin == "" {
			rec.Err = "topic service binary not built"
			return rec
		}
		helper = exec.Command(tsvcBin, "-listen", hostport, "-token", benchToken)
		brokerURL = "topicsvc://" + hostport
	case "redis":
		helper = exec.Command("redis-server", "--port", strconv.Itoa(port), "--bind", "127.0.0.1",
			"--save", "", "--appendonly", "no")
		brokerURL = "redis://" + hostport + "/0"
	}
	helper.Stderr = os.Stderr
	if err := helper.Start(); err != nil {
		rec.Err = err.Error()
		return rec
	}
	defer stop(helper)
	if err := waitTCP(hostport, 10*time.Second); err != nil {
		rec.Err = err.Error()
		return rec
	}
	var nodes [2]*exec.Cmd
	var addrs [2]string
	for i := range nodes {
		n, a, err := startServer(command(self, false, 0, []string{"server", "-target", "firetower", "-broker", brokerURL}))
		if err != nil {
			rec.Err = err.Error()
			return rec
		}
		defer stop(n)
		nodes[i], addrs[i] = n, a
	}
	drive(&rec, self, false, sc, firetowerTarget, "", addrs[1], addrs[0], nodes[1].Process.Pid)
	return rec
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func waitTCP(addr string, d time.Duration) error {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("%s did not accept connections within %s", addr, d)
}
