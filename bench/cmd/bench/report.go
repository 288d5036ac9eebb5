package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
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

func summarize(sc scenario, targets []target, recs []record, rounds int) summary {
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
	dps := func(r record) float64 { return r.Load.DeliveriesPS }
	p99 := func(r record) float64 { return r.Load.P99us }
	rssPerConn := func(r record) float64 {
		if r.Load.Subscribed == 0 {
			return 0
		}
		return float64(r.RSSSubKB-r.RSSBaseKB) / float64(r.Load.Subscribed)
	}

	var b strings.Builder
	fmt.Fprintf(&b, "### %s — %s\n\n", sc.Name, sc.Title)
	fmt.Fprintf(&b, "`cd bench && go run ./cmd/bench -scenario %s -rounds %d` — %s, medians of %d rounds, ratios are firetower ÷ target per round → their median.\n\n",
		sc.Name, rounds, time.Now().UTC().Format("2006-01-02"), rounds)
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
