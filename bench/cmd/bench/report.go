package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// chartData is what the chart needs of one scenario; it is kept, as JSON in
// an HTML comment, in the scenario's section of BENCHMARKS.md so the chart
// can be redrawn from every scenario after running only one of them.
type chartData struct {
	Scenario string    `json:"scenario"`
	Metric   string    `json:"metric"`
	Targets  []string  `json:"targets"`
	Values   []float64 `json:"values"`
}

type summary struct {
	Markdown string
	Chart    chartData
}

func summarize(sc scenario, targets []target, recs []record, rounds int, flags []string) summary {
	by := func(t, variant string) []record {
		var out []record
		for _, r := range recs {
			if r.Target == t && r.Variant == variant && r.Err == "" {
				out = append(out, r)
			}
		}
		return out
	}
	med := func(rs []record, f func(record) float64) float64 {
		var v []float64
		for _, r := range rs {
			v = append(v, f(r))
		}
		return median(v)
	}
	// perRound lists firetower's figure over the target's, round by round,
	// then the median of those ratios.
	perRound := func(t, variant string, f func(record) float64) string {
		if t == "firetower" {
			return "—"
		}
		var ratios []float64
		var parts []string
		for r := 1; r <= rounds; r++ {
			var ft, other *record
			for i := range recs {
				x := &recs[i]
				if x.Round == r && x.Variant == variant && x.Err == "" {
					if x.Target == "firetower" {
						ft = x
					} else if x.Target == t {
						other = x
					}
				}
			}
			if ft == nil || other == nil || f(*other) == 0 {
				parts = append(parts, "n/a")
				continue
			}
			q := f(*ft) / f(*other)
			ratios = append(ratios, q)
			parts = append(parts, fmt.Sprintf("%.2f", q))
		}
		return fmt.Sprintf("%s → **%.2f**", strings.Join(parts, ", "), median(ratios))
	}
	// ratio is a's figure over b's (each a target and variant), round by
	// round, then the median of those ratios.
	ratio := func(at, av, bt, bv string, f func(record) float64) string {
		var ratios []float64
		var parts []string
		for r := 1; r <= rounds; r++ {
			var a, b *record
			for i := range recs {
				x := &recs[i]
				if x.Round != r || x.Err != "" {
					continue
				}
				if x.Target == at && x.Variant == av {
					a = x
				} else if x.Target == bt && x.Variant == bv {
					b = x
				}
			}
			if a == nil || b == nil || f(*b) == 0 {
				parts = append(parts, "n/a")
				continue
			}
			q := f(*a) / f(*b)
			ratios = append(ratios, q)
			parts = append(parts, fmt.Sprintf("%.2f", q))
		}
		return fmt.Sprintf("%s → **%.2f**", strings.Join(parts, ", "), median(ratios))
	}
	dps := func(r record) float64 { return r.Load.DeliveriesPS }
	cpuPer := func(r record) float64 { return r.CPUSeconds / max(float64(r.Load.Delivered), 1) }
	p99 := func(r record) float64 { return r.Load.P99us }
	rssPerConn := func(r record) float64 {
		if r.Load.Subscribed == 0 {
			return 0
		}
		return float64(r.RSSSubKB-r.RSSBaseKB) / float64(r.Load.Subscribed)
	}

	var b strings.Builder
	fmt.Fprintf(&b, "### %s — %s\n\n", sc.Name, sc.Title)
	extra := ""
	if len(flags) > 0 {
		extra = " " + strings.Join(flags, " ")
	}
	day := time.Now().UTC().Format("2006-01-02")
	if len(recs) > 0 && !recs[0].At.IsZero() {
		day = recs[0].At.UTC().Format("2006-01-02")
	}
	fmt.Fprintf(&b, "`cd bench && go run ./cmd/bench -scenario %s -rounds %d%s` — %s, medians of %d rounds, ratios are firetower ÷ target per round → their median.\n\n",
		cmdName(sc), rounds, extra, day, rounds)
	cd := chartData{Scenario: sc.Name}
	switch sc.Kind {
	case "throughput":
		cd.Metric = "deliveries/s"
		b.WriteString("| target | deliveries/s | p50 ms | p99 ms | lost | msgs/frame | server CPU s per 1M deliveries | firetower ÷ target, deliveries/s | firetower ÷ target, p99 |\n|---|---|---|---|---|---|---|---|---|\n")
		for _, t := range targets {
			rs := by(t.Name, "")
			if len(rs) == 0 {
				fmt.Fprintf(&b, "| %s | failed | | | | | | | |\n", t.Name)
				continue
			}
			var lost int64
			for _, r := range rs {
				lost = max(lost, r.Load.Lost)
			}
			d := med(rs, dps)
			fmt.Fprintf(&b, "| %s | %.0f | %.2f | %.2f | %d | %.1f | %.2f | %s | %s |\n", t.Name, d,
				med(rs, func(r record) float64 { return r.Load.P50us })/1e3, med(rs, p99)/1e3, lost,
				med(rs, func(r record) float64 { return float64(r.Load.Delivered) / max(float64(r.Load.Frames), 1) }),
				med(rs, func(r record) float64 { return r.CPUSeconds / max(float64(r.Load.Delivered), 1) * 1e6 }),
				perRound(t.Name, "", dps), perRound(t.Name, "", p99))
			cd.Targets = append(cd.Targets, t.Name)
			cd.Values = append(cd.Values, d)
		}
	case "history":
		cd.Metric = "deliveries/s"
		fmt.Fprintf(&b, "History: %d messages a topic, kept %s (firetower `TopicOptions{HistorySize, HistoryTTL}`; Centrifuge `WithHistory` on every publish, `EnableRecovery` on every subscription, memory broker).\n\n", sc.History, ttlText(sc.HistoryTTL))
		b.WriteString("| target | history | deliveries/s | p50 ms | p99 ms | lost | msgs/frame | server CPU s per 1M deliveries | firetower ÷ centrifuge (same history), deliveries/s | with ÷ without history, deliveries/s | firetower ÷ centrifuge (same history), CPU per delivery | with ÷ without history, CPU per delivery | firetower ÷ centrifuge (same history), p99 | others' CPU s |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
		for _, t := range targets {
			for _, v := range []string{"", "history"} {
				hname := "none"
				if v != "" {
					hname = strconv.Itoa(sc.History)
				}
				rs := by(t.Name, v)
				if len(rs) == 0 {
					fmt.Fprintf(&b, "| %s | %s | failed | | | | | | | | | | | |\n", t.Name, hname)
					continue
				}
				var lost int64
				for _, r := range rs {
					lost = max(lost, r.Load.Lost)
				}
				d := med(rs, dps)
				vsCf, vsCfP99, vsNone, vsCfCPU, vsNoneCPU := "—", "—", "—", "—", "—"
				if t.Name == "firetower" {
					vsCf = ratio("firetower", v, "centrifuge", v, dps)
					vsCfP99 = ratio("firetower", v, "centrifuge", v, p99)
					vsCfCPU = ratio("firetower", v, "centrifuge", v, cpuPer)
				}
				if v != "" {
					vsNone = ratio(t.Name, v, t.Name, "", dps)
					vsNoneCPU = ratio(t.Name, v, t.Name, "", cpuPer)
				}
				fmt.Fprintf(&b, "| %s | %s | %.0f | %.2f | %.2f | %d | %.1f | %.2f | %s | %s | %s | %s | %s | %.1f |\n", t.Name, hname, d,
					med(rs, func(r record) float64 { return r.Load.P50us })/1e3, med(rs, p99)/1e3, lost,
					med(rs, func(r record) float64 { return float64(r.Load.Delivered) / max(float64(r.Load.Frames), 1) }),
					med(rs, func(r record) float64 { return r.CPUSeconds / max(float64(r.Load.Delivered), 1) * 1e6 }),
					vsCf, vsNone, vsCfCPU, vsNoneCPU, vsCfP99, med(rs, func(r record) float64 { return r.OtherCPU }))
				name := t.Name
				if v != "" {
					name += "+h"
				}
				cd.Targets = append(cd.Targets, name)
				cd.Values = append(cd.Values, d)
			}
		}
	case "storm":
		cd.Metric = "ms until all caught up"
		fmt.Fprintf(&b, "History %d, kept %s; %d messages followed live first; the clients drop (TCP close, no close frame), %d messages are published, then all reconnect at once: firetower subscribes with `since` (epoch, offset), Centrifuge with `recover`, `epoch`, `offset`. *Correct*: the reply said recovered, then exactly the missed offsets in order with the data published at each, none twice, and the next live message once. The *plain* rows are the same storm with the clients subscribing without asking to recover (done at the subscribe reply): what the reconnections alone cost.\n\n", sc.History, ttlText(sc.HistoryTTL), 10, sc.Count)
		b.WriteString("| target | resubscribe | correct clients | caught up | recovered | with a gap / twice / wrong data | all caught up ms | per client p50 / p99 ms | subscribe reply p50 / max ms | server CPU s, storm | firetower ÷ target, time until all caught up | firetower ÷ target, server CPU |\n|---|---|---|---|---|---|---|---|---|---|---|---|\n")
		all := func(r record) float64 { return r.Load.Storm.AllMs }
		cpu := func(r record) float64 { return r.StormCPU }
		for _, v := range []string{"", "plain"} {
			how := "recovering"
			if v != "" {
				how = "plain"
			}
			for _, t := range targets {
				var rs []record
				for _, r := range by(t.Name, v) {
					if r.Load.Storm != nil {
						rs = append(rs, r)
					}
				}
				if len(rs) == 0 {
					fmt.Fprintf(&b, "| %s | %s | failed | | | | | | | | | |\n", t.Name, how)
					continue
				}
				var correct, caught, clients, recovered, gap, twice, wrong int
				for _, r := range rs {
					s := r.Load.Storm
					correct += s.Correct
					caught += s.CaughtUp
					clients += s.Clients
					recovered += s.Recovered
					gap += s.Missing
					twice += s.Duplicated
					wrong += s.WrongData
				}
				vsT, vsCPU := "—", "—"
				if t.Name != "firetower" {
					vsT = ratio("firetower", v, t.Name, v, all)
					vsCPU = ratio("firetower", v, t.Name, v, cpu)
				}
				var full []record
				for _, r := range rs {
					if r.Load.Storm.AllMs > 0 {
						full = append(full, r)
					}
				}
				a := med(full, all)
				fmt.Fprintf(&b, "| %s | %s | %d / %d | %d | %d | %d / %d / %d | %s | %.0f / %.0f | %.0f / %.0f | %.2f | %s | %s |\n", t.Name, how,
					correct, clients, caught, recovered, gap, twice, wrong, msOr(a, len(full), len(rs)),
					med(rs, func(r record) float64 { return r.Load.Storm.DoneP50 }),
					med(rs, func(r record) float64 { return r.Load.Storm.DoneP99 }),
					med(rs, func(r record) float64 { return r.Load.Storm.AckP50 }),
					med(rs, func(r record) float64 { return r.Load.Storm.AckMax }),
					med(rs, cpu), vsT, vsCPU)
				if v == "" {
					cd.Targets = append(cd.Targets, t.Name)
					cd.Values = append(cd.Values, a)
				}
			}
		}
		b.WriteString("\n(Clients, caught up, recovered and faults are summed over the rounds; times and CPU are medians. *All caught up* is the median over the rounds in which every client caught up, their number noted when some did not.)\n")
	case "idle":
		cd.Metric = "RSS KB per connection"
		b.WriteString("| target | subscribed | RSS per connection KB | × 100,000 connections GB | broadcast delivered / expected | broadcast, last delivery ms | connect s | firetower ÷ target, RSS per connection |\n|---|---|---|---|---|---|---|---|\n")
		for _, t := range targets {
			rs := by(t.Name, "")
			if len(rs) == 0 {
				fmt.Fprintf(&b, "| %s | failed | | | | | | |\n", t.Name)
				continue
			}
			var del, exp int64
			for _, r := range rs {
				del += r.Load.Delivered
				exp += r.Load.Expected
			}
			k := med(rs, rssPerConn)
			fmt.Fprintf(&b, "| %s | %.0f | %.2f | %.2f | %d / %d | %.0f | %.1f | %s |\n", t.Name,
				med(rs, func(r record) float64 { return float64(r.Load.Subscribed) }), k, k*1e5/1024/1024,
				del, exp, med(rs, func(r record) float64 { return r.Load.MaxUs })/1e3,
				med(rs, func(r record) float64 { return r.Load.ConnectSeconds }), perRound(t.Name, "", rssPerConn))
			cd.Targets = append(cd.Targets, t.Name)
			cd.Values = append(cd.Values, k)
		}
	case "cluster":
		cd.Metric = "deliveries/s"
		b.WriteString("| setup | deliveries/s | p50 ms | p99 ms | lost | ÷ single node, deliveries/s per round |\n|---|---|---|---|---|---|\n")
		for _, t := range targets {
			rs := by(t.Name, "")
			if len(rs) == 0 {
				fmt.Fprintf(&b, "| %s | failed | | | | |\n", t.Name)
				continue
			}
			var lost int64
			for _, r := range rs {
				lost = max(lost, r.Load.Lost)
			}
			d := med(rs, dps)
			ratio := "—"
			if t.Name != "single" {
				var ratios []float64
				var parts []string
				for r := 1; r <= rounds; r++ {
					var one, other float64
					for _, x := range recs {
						if x.Round == r && x.Err == "" && x.Target == "single" {
							one = dps(x)
						} else if x.Round == r && x.Err == "" && x.Target == t.Name {
							other = dps(x)
						}
					}
					if one == 0 || other == 0 {
						parts = append(parts, "n/a")
						continue
					}
					ratios = append(ratios, other/one)
					parts = append(parts, fmt.Sprintf("%.2f", other/one))
				}
				ratio = fmt.Sprintf("%s → **%.2f**", strings.Join(parts, ", "), median(ratios))
			}
			fmt.Fprintf(&b, "| %s | %.0f | %.2f | %.2f | %d | %s |\n", t.Name, d,
				med(rs, func(r record) float64 { return r.Load.P50us })/1e3, med(rs, p99)/1e3, lost, ratio)
			cd.Targets = append(cd.Targets, t.Name)
			cd.Values = append(cd.Values, d)
		}
	case "stalled":
		cd.Metric = "p99 stalled / clean"
		b.WriteString("| target | p99 ms, no stalled | p99 ms, 1% stalled | ratio | lost (reading clients) | disconnects (reading clients) | firetower ÷ target, p99 with stalled |\n|---|---|---|---|---|---|---|\n")
		for _, t := range targets {
			clean, st := by(t.Name, ""), by(t.Name, "stalled")
			if len(clean) == 0 || len(st) == 0 {
				fmt.Fprintf(&b, "| %s | failed | | | | | |\n", t.Name)
				continue
			}
			var lost, disc int64
			for _, r := range st {
				lost += r.Load.Lost
				disc += r.Load.Disconnects
			}
			a, s := med(clean, p99), med(st, p99)
			fmt.Fprintf(&b, "| %s | %.2f | %.2f | %.2f | %d | %d | %s |\n", t.Name, a/1e3, s/1e3, s/max(a, 1), lost, disc, perRound(t.Name, "stalled", p99))
			cd.Targets = append(cd.Targets, t.Name)
			cd.Values = append(cd.Values, s/max(a, 1))
		}
	case "presence", "joinstorm", "users":
		cd = summarizeUsers(&b, sc, targets, recs, rounds)
	}
	raw, _ := json.Marshal(cd)
	fmt.Fprintf(&b, "\n<!-- data:%s -->\n", raw)
	return summary{Markdown: b.String(), Chart: cd}
}

var dataRe = regexp.MustCompile(`<!-- data:(\{.*\}) -->`)

// writeReport replaces the scenario's section of BENCHMARKS.md (appending it
// the first time) and redraws docs/bench.png from every section's data.
func writeReport(dir string, sc scenario, sum summary) error {
	path := filepath.Join(dir, "BENCHMARKS.md")
	old, err := os.ReadFile(path)
	if err != nil && !os.IsNotExist(err) {
		return err
	}
	doc := string(old)
	if doc == "" {
		doc = "# Benchmarks\n\n## Results\n"
	}
	begin := "<!-- bench:" + sc.Name + ":begin -->"
	end := "<!-- bench:" + sc.Name + ":end -->"
	section := begin + "\n" + sum.Markdown + end
	if i := strings.Index(doc, begin); i >= 0 {
		j := strings.Index(doc[i:], end)
		if j < 0 {
			return fmt.Errorf("%s: %s without %s", path, begin, end)
		}
		doc = doc[:i] + section + doc[i+j+len(end):]
	} else {
		doc = strings.TrimRight(doc, "\n") + "\n\n" + section + "\n"
	}
	if err := os.WriteFile(path, []byte(doc), 0o644); err != nil {
		return err
	}
	return redrawChart(dir)
}

// redrawChart draws docs/bench.png from the data of every scenario section
// of BENCHMARKS.md.
func redrawChart(dir string) error {
	raw, err := os.ReadFile(filepath.Join(dir, "BENCHMARKS.md"))
	if err != nil {
		return err
	}
	doc := string(raw)
	var charts []chartData
	for _, s := range scenarios {
		if s.Kind == "history" || s.Kind == "storm" || usersKind(s.Kind) {
			// Their own tables; the chart stays the peers' comparison.
			continue
		}
		for _, m := range dataRe.FindAllStringSubmatch(doc, -1) {
			var cd chartData
			if json.Unmarshal([]byte(m[1]), &cd) == nil && cd.Scenario == s.Name {
				charts = append(charts, cd)
			}
		}
	}
	if err := os.MkdirAll(filepath.Join(dir, "docs"), 0o755); err != nil {
		return err
	}
	return writeChart(filepath.Join(dir, "docs", "bench.png"), charts)
}

// cmdName is the -scenario argument (and -history flag) that reruns sc.
func cmdName(sc scenario) string {
	for _, s := range scenarios {
		if s.Name == sc.Name {
			if s.History != sc.History && sc.History > 0 {
				return fmt.Sprintf("%s -history %d", sc.Name, sc.History)
			}
			return sc.Name
		}
	}
	if base, ok := strings.CutSuffix(sc.Name, "-history"); ok {
		return fmt.Sprintf("%s -history %d", base, sc.History)
	}
	return sc.Name
}

// msOr prints a median time of n of all rounds.
func msOr(ms float64, n, all int) string {
	switch {
	case n == 0:
		return "never"
	case n < all:
		return fmt.Sprintf("%.0f (%d of %d rounds)", ms, n, all)
	}
	return fmt.Sprintf("%.0f", ms)
}

// ttlText prints a history TTL the way a reader says it.
func ttlText(d time.Duration) string {
	switch {
	case d%time.Hour == 0:
		return fmt.Sprintf("%d h", d/time.Hour)
	case d%time.Minute == 0:
		return fmt.Sprintf("%d min", d/time.Minute)
	}
	return d.String()
}
