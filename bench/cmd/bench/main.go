// Command bench measures firetower against its peers on one machine.
//
//	cd bench && go run ./cmd/bench -scenario fanout1k -rounds 3
//
// runs the scenario against every target in turn, rounds interleaved, each
// target in a server process of its own and the load from another process,
// then prints medians and per-round ratios and rewrites the scenario's section
// of ../BENCHMARKS.md and the chart ../docs/bench.png.
//
// The same binary is the server ("bench server -target X") and the load
// generator ("bench load ..."): the driver starts itself in those roles.
package main

import (
	"bufio"
	"cmp"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

func main() {
	if len(os.Args) > 1 {
		switch os.Args[1] {
		case "server":
			serverMain(os.Args[2:])
			return
		case "load":
			loadMain(os.Args[2:])
			return
		}
	}
	driverMain(os.Args[1:])
}

// target is one server under test and how the load generator talks to it.
type target struct {
	Name   string
	WSPath string
	Proto  string
	Args   []string // extra server flags
}

var allTargets = []target{
	{Name: "firetower", WSPath: "/ws?batch=1", Proto: "ft"},
	{Name: "centrifuge", WSPath: "/ws", Proto: "cf"},
	{Name: "melodytopic", WSPath: "/ws", Proto: "ft"},
	{Name: "naive", WSPath: "/ws", Proto: "ft"},
	{Name: "wire", WSPath: "/ws?batch=1", Proto: "ft"},
}

// scenario fixes the load; every target gets the same one.
type scenario struct {
	Name     string
	Title    string
	Conns    int
	Topics   int
	Mode     string
	Window   int
	Rate     int
	Count    int
	Duration time.Duration
	Stall    bool // run each target without and with 1% stalled clients
	// Publishers is the number of concurrent HTTP publishers; a publish
	// returns once the server has fanned it out, so this bounds how many
	// publishes are in flight.
	Publishers int
	Kind       string
	// History is the number of messages every topic keeps (firetower's
	// TopicOptions.HistorySize, Centrifuge's WithHistory) and HistoryTTL how
	// long; the history kind runs each target without and with it.
	History    int
	HistoryTTL time.Duration
}

var scenarios = []scenario{
	{Name: "fanout1k", Title: "1,000 subscribers, 1 topic, 100 B messages", Conns: 1000, Topics: 1, Mode: "window", Window: 32, Duration: 5 * time.Second, Kind: "throughput"},
	{Name: "topics100", Title: "1,000 subscribers over 100 topics, 100 B messages", Conns: 1000, Topics: 100, Mode: "window", Window: 32, Duration: 5 * time.Second, Kind: "throughput"},
	{Name: "fanout10k", Title: "10,000 subscribers, 1 topic, 100 B messages", Conns: 10000, Topics: 1, Mode: "window", Window: 32, Duration: 5 * time.Second, Kind: "throughput"},
	{Name: "idle20k", Title: "19,000 idle subscribed connections (the open-file limit is 20,000), then one broadcast", Conns: 19000, Topics: 1, Mode: "once", Count: 1, Kind: "idle"},
	{Name: "stalled", Title: "1,000 subscribers, 200 publishes/s for 10 s; 1% of clients stop reading", Conns: 1000, Topics: 1, Mode: "rate", Rate: 200, Duration: 10 * time.Second, Stall: true, Kind: "stalled"},
	{Name: "cluster", Title: "1,000 subscribers on one node, publishes sent to another: topic service, Redis, and one node alone for reference", Conns: 1000, Topics: 1, Mode: "window", Window: 32, Duration: 5 * time.Second, Kind: "cluster"},
	{Name: "fanout1k-history", Title: "1,000 subscribers, 1 topic, 100 B messages, without and with history 100 (1 min)", Conns: 1000, Topics: 1, Mode: "window", Window: 32, Duration: 3 * time.Second, Kind: "history", History: 100, HistoryTTL: time.Minute},
	{Name: "topics100-history", Title: "1,000 subscribers over 100 topics, 100 B messages, without and with history 100 (1 min)", Conns: 1000, Topics: 100, Mode: "window", Window: 32, Duration: 3 * time.Second, Kind: "history", History: 100, HistoryTTL: time.Minute},
	{Name: "storm", Title: "reconnect storm: 1,000 clients of one topic with history 100 disconnect, 100 messages are published, all reconnect at once and recover them", Conns: 1000, Topics: 1, Mode: "storm", Count: 100, Duration: time.Minute, Kind: "storm", History: 100, HistoryTTL: time.Minute},
	{Name: "presence10k", Title: "10,000 subscribers of one presence topic, each its own user; 200 presence queries each way", Conns: 10000, Topics: 1, Mode: "presence", Kind: "presence"},
	{Name: "joinstorm", Title: "100 observers of a join/leave topic; 1,000 new users a second for 10 s subscribe and leave a second later", Conns: 100, Topics: 1, Mode: "joinstorm", Rate: 1000, Duration: 10 * time.Second, Kind: "joinstorm"},
	{Name: "users1k", Title: "1,000 connected users, publishes addressed to users", Conns: 1000, Topics: 1, Mode: "users", Window: 32, Duration: 5 * time.Second, Kind: "users"},
	{Name: "connmax", Title: "19,900 subscribed connections (open-file limit 20,000 per process), one broadcast to all", Conns: 19900, Topics: 1, Mode: "once", Count: 1, Kind: "idle"},
}

// record is one target's run in one round.
type record struct {
	Target     string     `json:"target"`
	Round      int        `json:"round"`
	At         time.Time  `json:"at,omitzero"`
	Variant    string     `json:"variant,omitempty"`
	Load       loadResult `json:"load"`
	RSSBaseKB  int64      `json:"rssBaseKB"`
	RSSSubKB   int64      `json:"rssSubscribedKB"`
	HWMKB      int64      `json:"hwmKB"`
	CPUSeconds float64    `json:"cpuSeconds"`
	// StormCPU is the server's CPU time from the reconnect storm's first
	// dial until every client caught up (storm scenario).
	StormCPU float64 `json:"stormCPUSeconds,omitempty"`
	// StormLoadCPU is the load generator's CPU time over the same phase.
	StormLoadCPU float64 `json:"stormLoadCPUSeconds,omitempty"`
	// OtherCPU is the CPU time the rest of the machine used meanwhile
	// (everything but this server and its load generator); for the storm,
	// during its reconnection phase.
	OtherCPU float64 `json:"otherCPUSeconds"`
	LoadCPU  float64 `json:"loadCPUSeconds"`
	Err      string  `json:"err,omitempty"`
	// Flags are the driver's flags that shaped the run (-max-others, …).
	Flags []string `json:"flags,omitempty"`
}

func driverMain(args []string) {
	fs := flag.NewFlagSet("bench", flag.ExitOnError)
	name := fs.String("scenario", "fanout1k", "scenario: "+scenarioNames())
	rounds := fs.Int("rounds", 3, "rounds; targets are interleaved within each round")
	only := fs.String("targets", "", "comma-separated subset of targets (default: all)")
	pin := fs.Bool("pin", true, "pin the server to CPU 0 and the load generator to CPU 1 (taskset)")
	out := fs.String("out", "..", "directory holding BENCHMARKS.md and docs/")
	write := fs.Bool("write", true, "rewrite BENCHMARKS.md's section and docs/bench.png")
	publishers := fs.Int("publishers", 0, "override the scenario's concurrent HTTP publishers")
	cpuprofile := fs.String("cpuprofile", "", "write a CPU profile of the firetower server (last round) to this file")
	chartOnly := fs.Bool("chart-only", false, "only redraw docs/bench.png from BENCHMARKS.md")
	resummarize := fs.Bool("resummarize", false, "run nothing: summarize bench/results/<scenario>.json again and rewrite its section")
	history := fs.Int("history", 0, "messages of history per topic: on fanout1k, topics100 or fanout10k, runs firetower and centrifuge without and with it (section <scenario>-history); on the history scenarios and storm, overrides their 100")
	profVariant := fs.String("cpuprofile-variant", "", "which variant -cpuprofile profiles (history: \"history\")")
	loadprofile := fs.String("loadprofile", "", "write CPU profiles of the load generator to this path + .<target><variant> (each round overwrites them)")
	quiet := fs.Duration("quiet", 0, "before each run, wait (at most 20 s) until the machine was idle apart from this harness for this long, e.g. 1s")
	maxOthers := fs.Float64("max-others", 0, "run again (at most twice) a run during which the rest of the machine used more than this many CPU seconds, keeping the quietest of the tries (0: never)")
	duration := fs.Duration("duration", 0, "override the scenario's publishing time (throughput scenarios)")
	historyTTL := fs.Duration("history-ttl", 0, "how long history keeps a message (default: the scenario's, 1 min)")
	_ = fs.Parse(args)
	if *chartOnly {
		if err := redrawChart(*out); err != nil {
			log.Fatal(err)
		}
		return
	}

	var sc *scenario
	for i := range scenarios {
		if scenarios[i].Name == *name {
			sc = &scenarios[i]
		}
	}
	if sc == nil {
		log.Fatalf("unknown scenario %q (have %s)", *name, scenarioNames())
	}
	if *history > 0 {
		switch sc.Kind {
		case "throughput":
			sc.Name += "-history"
			sc.Title += fmt.Sprintf(", without and with history %d", *history)
			sc.Kind = "history"
			sc.HistoryTTL = time.Minute
		case "history", "storm":
		default:
			log.Fatalf("-history applies to the throughput, history and storm scenarios, not %s", sc.Name)
		}
		sc.History = *history
	}
	if *historyTTL > 0 {
		sc.HistoryTTL = *historyTTL
	}
	if *publishers > 0 {
		sc.Publishers = *publishers
	}
	if *duration > 0 && sc.Mode == "window" {
		sc.Duration = *duration
	}
	quietFor = *quiet
	if *loadprofile != "" {
		loadProfile, _ = filepath.Abs(*loadprofile)
	}
	if sc.Publishers == 0 {
		sc.Publishers = 16
	}
	targets := allTargets
	if sc.Kind == "history" || sc.Kind == "storm" || usersKind(sc.Kind) {
		// Only these two keep history, presence and users.
		targets = []target{allTargets[0], allTargets[1]}
	}
	if *only != "" {
		targets = nil
		for _, n := range strings.Split(*only, ",") {
			for _, t := range allTargets {
				if t.Name == n {
					if (sc.Kind == "history" || sc.Kind == "storm" || usersKind(sc.Kind)) && n != "firetower" && n != "centrifuge" {
						log.Printf("%s has no history, presence or users: left out of %s", n, sc.Name)
						continue
					}
					targets = append(targets, t)
				}
			}
		}
	}
	self, err := os.Executable()
	if err != nil {
		log.Fatal(err)
	}
	variants := []string{""}
	if sc.Stall {
		variants = []string{"", "stalled"}
	}
	if sc.Kind == "history" {
		variants = []string{"", "history"}
	}
	if sc.Kind == "storm" {
		// "plain": the same storm, the clients subscribing without asking
		// to recover: what the reconnections alone cost.
		variants = []string{"", "plain"}
	}
	if v := usersVariants(sc.Kind); v != nil {
		variants = v
	}
	var recs []record
	// The flags that shaped the runs, for the section's command line.
	var flags []string
	if *maxOthers > 0 {
		flags = append(flags, fmt.Sprintf("-max-others %g", *maxOthers))
	}
	if *duration > 0 && sc.Mode == "window" {
		flags = append(flags, "-duration "+duration.String())
	}
	if *historyTTL > 0 {
		flags = append(flags, "-history-ttl "+historyTTL.String())
	}
	if *resummarize {
		raw, err := os.ReadFile(filepath.Join("results", sc.Name+".json"))
		if err != nil {
			log.Fatal(err)
		}
		if err := json.Unmarshal(raw, &recs); err != nil {
			log.Fatal(err)
		}
		*rounds = 0
		for _, r := range recs {
			*rounds = max(*rounds, r.Round)
		}
		if len(recs) > 0 {
			flags = recs[0].Flags
		}
		if sc.Kind == "cluster" {
			targets = nil
			for _, v := range clusterVariants {
				targets = append(targets, target{Name: v})
			}
		}
	}
	if sc.Kind == "cluster" && !*resummarize {
		tsvcBin, err := buildTopicsvc(*out, os.TempDir())
		if err != nil {
			log.Print(err)
		}
		targets = nil
		for _, v := range clusterVariants {
			targets = append(targets, target{Name: v})
		}
		for r := range *rounds {
			for i := range clusterVariants {
				v := clusterVariants[(i+r)%len(clusterVariants)]
				rec := runCluster(self, *sc, v, tsvcBin)
				rec.Round = r + 1
				recs = append(recs, rec)
				printRecord(rec)
			}
		}
	}
	for r := range *rounds {
		if sc.Kind == "cluster" || *resummarize {
			break
		}
		// Rotate the order each round so no target always runs first (on a
		// cold cache) or last (after the others warmed the machine). The
		// history kind rotates its target and variant pairs as one list.
		type run struct {
			t target
			v string
		}
		var runs []run
		for i := range targets {
			t := targets[(i+r)%len(targets)]
			for _, v := range variants {
				runs = append(runs, run{t, v})
			}
		}
		if sc.Kind == "history" || sc.Kind == "storm" || usersKind(sc.Kind) {
			runs = runs[:0]
			for _, t := range targets {
				for _, v := range variants {
					runs = append(runs, run{t, v})
				}
			}
			k := r % len(runs)
			runs = append(runs[k:], runs[:k]...)
		}
		for _, x := range runs {
			prof := ""
			if *cpuprofile != "" && x.t.Name == "firetower" && r == *rounds-1 && x.v == *profVariant {
				prof, _ = filepath.Abs(*cpuprofile)
			}
			rec := runOne(self, *pin, *sc, x.t, x.v, prof)
			for try := 1; *maxOthers > 0 && try <= 2 && rec.Err == "" && rec.OtherCPU > *maxOthers; try++ {
				log.Printf("round %d %s/%s: others used %.2f CPU s, running it again", r+1, x.t.Name, x.v, rec.OtherCPU)
				again := runOne(self, *pin, *sc, x.t, x.v, prof)
				if again.Err == "" && again.OtherCPU < rec.OtherCPU {
					rec = again
				}
			}
			rec.Round = r + 1
			recs = append(recs, rec)
			printRecord(rec)
		}
	}
	for i := range recs {
		recs[i].Flags = flags
	}
	sum := summarize(*sc, targets, recs, *rounds, flags)
	fmt.Println()
	fmt.Print(sum.Markdown)
	if !*resummarize {
		_ = os.MkdirAll("results", 0o755)
		raw, _ := json.MarshalIndent(recs, "", "  ")
		_ = os.WriteFile(filepath.Join("results", sc.Name+".json"), raw, 0o644)
	}
	if *write {
		if err := writeReport(*out, *sc, sum); err != nil {
			log.Fatal(err)
		}
	}
}

func scenarioNames() string {
	var n []string
	for _, s := range scenarios {
		n = append(n, s.Name)
	}
	return strings.Join(n, ", ")
}

func printRecord(r record) {
	l := r.Load
	v := ""
	if r.Variant != "" {
		v = "/" + r.Variant
	}
	if r.Err != "" {
		fmt.Printf("round %d %-12s%s ERROR %s\n", r.Round, r.Target, v, r.Err)
		return
	}
	if s := l.Storm; s != nil {
		fmt.Printf("round %d %-12s%s correct %d/%d  recovered %d  gap %d twice %d wrong %d early %d live-missed %d  all caught up %.0f ms (p50 %.0f, p99 %.0f)  reply p50 %.0f max %.0f ms  live %.0f ms  server cpu %.2fs  load cpu %.2fs  others %.2fs  msgs %d  dial errors %d  errors %d %s\n",
			r.Round, r.Target, v, s.Correct, s.Clients, s.Recovered, s.Missing, s.Duplicated, s.WrongData, s.EarlyMsg, s.LiveMissed,
			s.AllMs, s.DoneP50, s.DoneP99, s.AckP50, s.AckMax, s.LiveMs, r.StormCPU, r.StormLoadCPU, r.OtherCPU, s.Messages, s.DialErrors, s.Errors, s.FirstError)
		return
	}
	fmt.Printf("round %d %-12s%s subscribed %d/%d  deliveries/s %10.0f  p50 %7.2f ms  p99 %7.2f ms  lost %d  msgs/frame %.1f  cpu %.2fs (load %.2fs, others %.2fs, over %.1fs)  rss %d MB (+%d KB for conns)\n",
		r.Round, r.Target, v, l.Subscribed, l.Conns, l.DeliveriesPS, l.P50us/1e3, l.P99us/1e3, l.Lost,
		float64(l.Delivered)/max(float64(l.Frames), 1), r.CPUSeconds, r.LoadCPU, r.OtherCPU, l.Seconds, r.RSSSubKB/1024, r.RSSSubKB-r.RSSBaseKB)
}

// runOne starts the target's server, drives the scenario's load at it from a
// second process, and stops the server. Every step has a deadline.
func runOne(self string, pin bool, sc scenario, t target, variant, cpuprofile string) record {
	rec := record{Target: t.Name, Variant: variant, At: time.Now()}
	srvArgs := append([]string{"server", "-target", t.Name}, t.Args...)
	if variant == "history" || sc.Kind == "storm" {
		srvArgs = append(srvArgs, "-history", strconv.Itoa(sc.History), "-history-ttl", sc.HistoryTTL.String())
	}
	if cpuprofile != "" {
		srvArgs = append(srvArgs, "-cpuprofile", cpuprofile)
	}
	var extra []string
	if usersKind(sc.Kind) {
		srvArgs, extra = usersRun(sc, variant, srvArgs)
	}
	srv, addr, err := startServer(command(self, pin, 0, srvArgs))
	if err != nil {
		rec.Err = err.Error()
		return rec
	}
	defer stop(srv)
	drive(&rec, self, pin, sc, t, variant, addr, addr, srv.Process.Pid, extra...)
	return rec
}

// startServer starts a server process and waits for its LISTEN line.
func startServer(srv *exec.Cmd) (*exec.Cmd, string, error) {
	out, _ := srv.StdoutPipe()
	srv.Stderr = os.Stderr
	if err := srv.Start(); err != nil {
		return nil, "", err
	}
	line, ok := waitLine(lineReader(out), "LISTEN ", 15*time.Second)
	if !ok {
		stop(srv)
		return nil, "", fmt.Errorf("server %v did not start", srv.Args)
	}
	return srv, "http://" + strings.TrimPrefix(line, "LISTEN "), nil
}

// drive runs the load generator: subscribers on addr, publishes to pubAddr;
// RSS and CPU are read from the server process pid (the subscribers' one).
func drive(rec *record, self string, pin bool, sc scenario, t target, variant, addr, pubAddr string, pid int, extraArgs ...string) {
	gc(addr)
	rec.RSSBaseKB = procStatus(pid, "VmRSS:")
	loadArgs := []string{"load", "-url", addr, "-pub-url", pubAddr, "-ws", t.WSPath, "-proto", t.Proto,
		"-conns", strconv.Itoa(sc.Conns), "-topics", strconv.Itoa(sc.Topics), "-mode", sc.Mode,
		"-window", strconv.Itoa(sc.Window), "-rate", strconv.Itoa(sc.Rate), "-count", strconv.Itoa(sc.Count),
		"-duration", sc.Duration.String(), "-publishers", strconv.Itoa(sc.Publishers), "-wait"}
	if variant == "stalled" {
		loadArgs = append(loadArgs, "-stall-every", "100")
	}
	if usersKind(sc.Kind) {
		loadArgs = append(loadArgs, "-server-pid", strconv.Itoa(pid), "-observers", strconv.Itoa(sc.Conns))
		loadArgs = append(loadArgs, extraArgs...)
	}
	if variant == "plain" {
		loadArgs = append(loadArgs, "-storm-plain")
	}
	if loadProfile != "" {
		loadArgs = append(loadArgs, "-cpuprofile", loadProfile+"."+t.Name+cmp.Or(variant, "main"))
	}
	ld := command(self, pin, 1, loadArgs)
	ldIn, _ := ld.StdinPipe()
	ldOut, _ := ld.StdoutPipe()
	ld.Stderr = os.Stderr
	if err := ld.Start(); err != nil {
		rec.Err = err.Error()
		return
	}
	defer stop(ld)
	ll := lineReader(ldOut)
	if _, ok := waitLine(ll, "SUBSCRIBED ", 5*time.Minute); !ok {
		rec.Err = "load generator did not subscribe"
		return
	}
	gc(addr)
	rec.RSSSubKB = procStatus(pid, "VmRSS:")
	if quietFor > 0 {
		waitQuiet(quietFor)
	}
	cpu0, lcpu0, busy0 := procCPU(pid), procCPU(ld.Process.Pid), machineBusy()
	_, _ = io.WriteString(ldIn, "go\n")
	var res string
	var stormCPU0, stormLoad0, stormBusy0, stormOther float64
	storm := false
	deadline := time.Now().Add(3 * time.Minute)
	for {
		// The storm marks its reconnection phase so that the server's CPU
		// time of the recovery alone can be read.
		l, ok := waitLine(ll, "", time.Until(deadline))
		if !ok {
			rec.Err = "load generator gave no result"
			return
		}
		if l == "STORMSTART" {
			stormCPU0, stormLoad0, stormBusy0 = procCPU(pid), procCPU(ld.Process.Pid), machineBusy()
			continue
		}
		if l == "STORMEND" {
			rec.StormCPU = procCPU(pid) - stormCPU0
			rec.StormLoadCPU = procCPU(ld.Process.Pid) - stormLoad0
			stormOther = max(machineBusy()-stormBusy0-rec.StormCPU-rec.StormLoadCPU, 0)
			storm = true
			continue
		}
		if strings.HasPrefix(l, "RESULT ") {
			res = l
			break
		}
		fmt.Fprintln(os.Stderr, l)
	}
	rec.CPUSeconds = procCPU(pid) - cpu0
	rec.LoadCPU = procCPU(ld.Process.Pid) - lcpu0
	rec.OtherCPU = max(machineBusy()-busy0-rec.CPUSeconds-rec.LoadCPU, 0)
	if storm {
		// The storm's figures come from its reconnection phase alone.
		rec.OtherCPU = stormOther
	}
	rec.HWMKB = procStatus(pid, "VmHWM:")
	if err := json.Unmarshal([]byte(strings.TrimPrefix(res, "RESULT ")), &rec.Load); err != nil {
		rec.Err = err.Error()
	}
	_ = ld.Wait()
}

func command(self string, pin bool, cpu int, args []string) *exec.Cmd {
	if pin {
		return exec.Command("taskset", append([]string{"-c", strconv.Itoa(cpu), self}, args...)...)
	}
	return exec.Command(self, args...)
}

// stop interrupts a child (so a CPU profile is flushed) and kills it if it
// lingers.
func stop(c *exec.Cmd) {
	if c.Process == nil || c.ProcessState != nil {
		return
	}
	_ = c.Process.Signal(syscall.SIGINT)
	done := make(chan struct{})
	go func() { _ = c.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		_ = c.Process.Kill()
		<-done
	}
}

func lineReader(r io.Reader) <-chan string {
	ch := make(chan string, 16)
	go func() {
		defer close(ch)
		sc := bufio.NewScanner(r)
		sc.Buffer(make([]byte, 1<<16), 1<<20)
		for sc.Scan() {
			ch <- sc.Text()
		}
	}()
	return ch
}

func waitLine(ch <-chan string, prefix string, d time.Duration) (string, bool) {
	t := time.NewTimer(d)
	defer t.Stop()
	for {
		select {
		case l, ok := <-ch:
			if !ok {
				return "", false
			}
			if strings.HasPrefix(l, prefix) {
				return l, true
			}
			fmt.Fprintln(os.Stderr, l)
		case <-t.C:
			return "", false
		}
	}
}

func gc(addr string) {
	c := http.Client{Timeout: 10 * time.Second}
	if resp, err := c.Get(addr + "/bench/gc"); err == nil {
		resp.Body.Close()
	}
	time.Sleep(300 * time.Millisecond)
}

// procStatus reads a kB field of /proc/<pid>/status. The server runs under
// taskset, which execs it, so the pid is the server's own.
func procStatus(pid int, field string) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, field) {
			f := strings.Fields(l)
			if len(f) >= 2 {
				v, _ := strconv.ParseInt(f[1], 10, 64)
				return v
			}
		}
	}
	return 0
}

// procCPU is the process's user+system CPU time in seconds.
func procCPU(pid int) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	s := string(b)
	if i := strings.LastIndexByte(s, ')'); i >= 0 {
		s = s[i+2:]
	}
	f := strings.Fields(s)
	if len(f) < 13 {
		return 0
	}
	u, _ := strconv.ParseFloat(f[11], 64)
	st, _ := strconv.ParseFloat(f[12], 64)
	return (u + st) / 100 // USER_HZ is 100 on Linux
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// quietFor is -quiet: how long the machine must have been idle, apart from
// the harness, before a run starts.
var quietFor time.Duration

// loadProfile is -loadprofile, absolute.
var loadProfile string

// machineBusy is the CPU time, in seconds, all processes of the machine
// have used since boot (/proc/stat: everything but idle and iowait).
func machineBusy() float64 {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 8 || f[0] != "cpu" {
		return 0
	}
	var busy float64
	for i, v := range f[1:] {
		if i == 3 || i == 4 { // idle, iowait
			continue
		}
		if i >= 7 { // guest time is already counted in user
			break
		}
		x, _ := strconv.ParseFloat(v, 64)
		busy += x
	}
	return busy / 100 // USER_HZ
}

// waitQuiet waits until the machine used less than a tenth of a core over
// the last d (the idle server and load generator use next to nothing), or
// 20 s passed.
func waitQuiet(d time.Duration) {
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		b0 := machineBusy()
		time.Sleep(d)
		if (machineBusy()-b0)/d.Seconds() < 0.1 {
			return
		}
	}
	log.Printf("the machine was not quiet for %s within 20 s; running anyway", d)
}
