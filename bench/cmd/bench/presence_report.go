package main

import (
	"fmt"
	"strings"
)

// The driver's side of the presence and users scenarios: their variants,
// the server and load flags of each run, and their tables.

func usersKind(kind string) bool {
	return kind == "presence" || kind == "joinstorm" || kind == "users"
}

// usersVariants are the runs of each target: presence10k with presence on
// ("") and off (the same subscribes, for the RSS baseline); joinstorm with
// join/leave ("") and the same churn without presence ("off").
func usersVariants(kind string) []string {
	switch kind {
	case "presence":
		return []string{"", "off"}
	case "joinstorm":
		return []string{"", "off"}
	case "users":
		return []string{""}
	}
	return nil
}

// usersRun gives one run its server flags and load flags. The node runs
// the embedded broker: the figures are the node and its broker in one
// process.
func usersRun(sc scenario, variant string, srvArgs []string) ([]string, []string) {
	mode := "users"
	var extra []string
	switch {
	case sc.Kind == "presence" && variant == "":
		mode = "presence"
	case sc.Kind == "presence":
		extra = append(extra, "-presence-off")
	case sc.Kind == "joinstorm" && variant != "off":
		mode = "joinleave"
	}
	return append(srvArgs, "-users-mode", mode), extra
}

// roundRatio is a's figure over b's, round by round, then their median.
func roundRatio(recs []record, rounds int, a, b func(record) bool, f func(record) (float64, bool)) string {
	var ratios []float64
	var parts []string
	for r := 1; r <= rounds; r++ {
		var fa, fb float64
		var oka, okb bool
		for _, x := range recs {
			if x.Round != r || x.Err != "" {
				continue
			}
			if a(x) {
				fa, oka = f(x)
			} else if b(x) {
				fb, okb = f(x)
			}
		}
		if !oka || !okb || fb == 0 {
			parts = append(parts, "n/a")
			continue
		}
		ratios = append(ratios, fa/fb)
		parts = append(parts, fmt.Sprintf("%.2f", fa/fb))
	}
	if len(ratios) == 0 {
		return "n/a"
	}
	return fmt.Sprintf("%s → **%.2f**", strings.Join(parts, ", "), median(ratios))
}

func is(t, v string) func(record) bool {
	return func(r record) bool { return r.Target == t && r.Variant == v }
}

func medOf(rs []record, f func(record) (float64, bool)) float64 {
	var v []float64
	for _, r := range rs {
		if x, ok := f(r); ok {
			v = append(v, x)
		}
	}
	return median(v)
}

// summarizeUsers writes the tables of the presence and users scenarios.
func summarizeUsers(b *strings.Builder, sc scenario, targets []target, recs []record, rounds int) chartData {
	by := func(t, v string) []record {
		var out []record
		for _, r := range recs {
			if r.Target == t && r.Variant == v && r.Err == "" {
				out = append(out, r)
			}
		}
		return out
	}
	cd := chartData{Scenario: sc.Name}
	switch sc.Kind {
	case "presence":
		cd.Metric = "presence query p50 ms (WS, sequential)"
		b.WriteString("Each connection is its own user (`u0` … `u9999`) with the info `{\"name\":\"Name u123\"}` (22 bytes); 200 queries each way, one at a time and from 8 at once (8 querying connections of their own users, not subscribed, or 8 HTTP clients). firetower: the WS frame `{\"type\":\"presence\",\"topic\":\"t0\",\"id\":N}` and `GET /topics/t0/presence`, which list at most **1,000 clients** (`firetower.MaxPresenceClients`) and count all of them (`\"users\":10000,\"connections\":10000`); Centrifuge: the client `presence` command (with `OnPresence` answering from the node) and `GET /bench/presence`, a route of the bench server that encodes `node.Presence(\"t0\")` as JSON: both list **every** client, there being no limit or count in the library's answer.\n\n")
		b.WriteString("| target | way | queries / errors | p50 ms | p99 ms | answer bytes | clients listed | connections counted | server CPU ms per query | firetower ÷ centrifuge, p50 | firetower ÷ centrifuge, CPU per query |\n|---|---|---|---|---|---|---|---|---|---|---|\n")
		for _, t := range targets {
			rs := by(t.Name, "")
			for k, way := range []string{"WS frame, sequential", "REST, sequential", "WS frame, 8 at once", "REST, 8 at once"} {
				ph := func(r record) (presencePhase, bool) {
					if r.Load.Presence == nil || len(r.Load.Presence.Phases) <= k {
						return presencePhase{}, false
					}
					return r.Load.Presence.Phases[k], true
				}
				num := func(g func(presencePhase) float64) func(record) (float64, bool) {
					return func(r record) (float64, bool) {
						p, ok := ph(r)
						return g(p), ok && p.Queries > p.Errors
					}
				}
				var q, e int
				for _, r := range rs {
					if p, ok := ph(r); ok {
						q += p.Queries
						e += p.Errors
					}
				}
				if q == 0 {
					fmt.Fprintf(b, "| %s | %s | failed | | | | | | | | |\n", t.Name, way)
					continue
				}
				p50 := num(func(p presencePhase) float64 { return p.P50Ms })
				cpu := num(func(p presencePhase) float64 { return p.CPU / float64(max(p.Queries-p.Errors, 1)) * 1e3 })
				vs50, vsCPU := "—", "—"
				if t.Name == "firetower" {
					vs50 = roundRatio(recs, rounds, is("firetower", ""), is("centrifuge", ""), p50)
					vsCPU = roundRatio(recs, rounds, is("firetower", ""), is("centrifuge", ""), cpu)
				}
				counted := "—"
				if c := medOf(rs, num(func(p presencePhase) float64 { return float64(p.Reported) })); c >= 0 && t.Name == "firetower" {
					counted = fmt.Sprintf("%.0f", c)
				}
				fmt.Fprintf(b, "| %s | %s | %d / %d | %.2f | %.2f | %.0f | %.0f | %s | %.2f | %s | %s |\n", t.Name, way, q, e,
					medOf(rs, p50), medOf(rs, num(func(p presencePhase) float64 { return p.P99Ms })),
					medOf(rs, num(func(p presencePhase) float64 { return float64(p.Bytes) })),
					medOf(rs, num(func(p presencePhase) float64 { return float64(p.Clients) })), counted,
					medOf(rs, cpu), vs50, vsCPU)
				if k == 0 {
					cd.Targets = append(cd.Targets, t.Name)
					cd.Values = append(cd.Values, medOf(rs, p50))
				}
			}
		}
		b.WriteString("\n(Queries and errors are summed over the rounds; the rest are medians over the rounds of each round's median, p99 or CPU time ÷ answered queries. Answer bytes: the WS message or the HTTP body.)\n\n")
		b.WriteString("| target | presence | subscribed | RSS per connection KB | presence on ÷ off, RSS per connection | firetower ÷ centrifuge, RSS per connection |\n|---|---|---|---|---|---|\n")
		rss := func(r record) (float64, bool) {
			if r.Load.Subscribed == 0 {
				return 0, false
			}
			return float64(r.RSSSubKB-r.RSSBaseKB) / float64(r.Load.Subscribed), true
		}
		for _, t := range targets {
			for _, v := range []string{"", "off"} {
				rs := by(t.Name, v)
				name := "on"
				if v != "" {
					name = "off"
				}
				if len(rs) == 0 {
					fmt.Fprintf(b, "| %s | %s | failed | | | |\n", t.Name, name)
					continue
				}
				onOff := "—"
				if v == "" {
					onOff = roundRatio(recs, rounds, is(t.Name, ""), is(t.Name, "off"), rss)
				}
				vs := "—"
				if t.Name == "firetower" {
					vs = roundRatio(recs, rounds, is("firetower", v), is("centrifuge", v), rss)
				}
				fmt.Fprintf(b, "| %s | %s | %.0f | %.2f | %s | %s |\n", t.Name, name,
					medOf(rs, func(r record) (float64, bool) { return float64(r.Load.Subscribed), true }), medOf(rs, rss), onOff, vs)
			}
		}
	case "joinstorm":
		cd.Metric = "server CPU µs per join"
		fmt.Fprintf(b, "%d observers (users `o0` … `o99`) subscribe to `t0` and stay; then %d new users a second for %s (`j0` … `j9999`, 10,000 in all, at most 4,000 open at once), each opening a connection, subscribing to `t0` and, a second after the subscribe was sent, closing it (a close frame). With presence, the topic has join and leave for every subscriber: firetower `TopicOptions{Presence, JoinLeave}` (default `PresenceGrace` 3 s: a leave comes 3 s after the close); Centrifuge `SubscribeOptions{EmitPresence, EmitJoinLeave, PushJoinLeave}` (leave at once). So the joiners, subscribed for their second, get the joins and leaves of the others too (*events to joiners*). Every observer must get each joiner's join and its leave exactly once: *lost* and *twice* count (observer, joiner) pairs. Join latency is subscribe sent → an observer's join frame received, over every observer. *Server CPU per joiner* is the node's CPU time from the first dial until the last leave arrived ÷ subscribed joiners: a connection, its subscribe, its join and leave to everyone, its close. The *off* rows are the same churn without presence (no events). Embedded broker only (the node and its broker in one process): no topic service or Redis row yet.\n\n", sc.Conns, sc.Rate, sc.Duration)
		b.WriteString("| target | presence | joiners subscribed / dialled | joins received (lost / twice) | leaves received (lost / twice) | join p50 / p99 ms | events to joiners | server CPU s | server CPU µs per joiner | firetower ÷ centrifuge, CPU per joiner | with ÷ without presence, CPU per joiner |\n|---|---|---|---|---|---|---|---|---|---|---|\n")
		jcpu := func(r record) (float64, bool) {
			j := r.Load.Join
			if j == nil || j.Subscribed == 0 {
				return 0, false
			}
			return j.CPU / float64(j.Subscribed) * 1e6, true
		}
		jf := func(g func(*joinResult) float64) func(record) (float64, bool) {
			return func(r record) (float64, bool) {
				if r.Load.Join == nil {
					return 0, false
				}
				return g(r.Load.Join), true
			}
		}
		for _, v := range []string{"", "off"} {
			for _, t := range targets {
				rs := by(t.Name, v)
				name := map[string]string{"": "join/leave", "off": "off"}[v]
				if len(rs) == 0 {
					fmt.Fprintf(b, "| %s | %s | failed | | | | | | | | |\n", t.Name, name)
					continue
				}
				var sub, dialled, joins, jl, jd, leaves, ll, ld int64
				for _, r := range rs {
					if j := r.Load.Join; j != nil {
						sub += int64(j.Subscribed)
						dialled += int64(j.Joiners)
						joins += j.Joins
						jl += j.JoinLost
						jd += j.JoinDup
						leaves += j.Leaves
						ll += j.LeaveLost
						ld += j.LeaveDup
					}
				}
				var disc int64
				for _, r := range rs {
					if r.Load.Join != nil {
						disc += r.Load.Join.ObserverDisconnects
					}
				}
				evJ, evL, lat := fmt.Sprintf("%d (%d / %d)", joins, jl, jd), fmt.Sprintf("%d (%d / %d)", leaves, ll, ld),
					fmt.Sprintf("%.1f / %.1f", medOf(rs, jf(func(j *joinResult) float64 { return j.P50Ms })), medOf(rs, jf(func(j *joinResult) float64 { return j.P99Ms })))
				if disc > 0 {
					evJ += fmt.Sprintf("; %d observers disconnected", disc)
				}
				if v == "off" {
					evJ, evL, lat = "—", "—", "—"
				}
				vs, with := "—", "—"
				if t.Name == "firetower" {
					vs = roundRatio(recs, rounds, is("firetower", v), is("centrifuge", v), jcpu)
				}
				if v != "off" {
					with = roundRatio(recs, rounds, is(t.Name, v), is(t.Name, "off"), jcpu)
				}
				fmt.Fprintf(b, "| %s | %s | %d / %d | %s | %s | %s | %.0f | %.2f | %.0f | %s | %s |\n", t.Name, name, sub, dialled, evJ, evL, lat,
					medOf(rs, jf(func(j *joinResult) float64 { return float64(j.JoinerFrames) })),
					medOf(rs, jf(func(j *joinResult) float64 { return j.CPU })), medOf(rs, jcpu), vs, with)
				if v == "" {
					cd.Targets = append(cd.Targets, t.Name)
					cd.Values = append(cd.Values, medOf(rs, jcpu))
				}
			}
		}
		b.WriteString("\n(Joiners, joins and leaves are summed over the rounds — expected: subscribed joiners × 100 observers each; times and CPU are medians. *Events to joiners*: the joins and leaves the joiners themselves received, per round.)\n")
	case "users":
		cd.Metric = "deliveries/s, one request to all users"
		fmt.Fprintf(b, "%d connections, one per user (`u0` … `u999`), data `{\"ts\":…,\"seq\":…,\"p\":\"…\"}` of 100 bytes, %s of publishing each way with at most %d undelivered messages per user in flight. *To all*: each request names all 1,000 users, 4 requests in flight — firetower `POST /publish {\"users\":[\"u0\",…,\"u999\"],\"data\":…}` (one message id, one broker publish per user); Centrifuge the same body to a route of the bench server that calls `node.Publish(\"#\"+user, data)` for each user, every connection subscribed server-side to its `#user` channel at connect (`ConnectReply.Subscriptions`; the library has no publish to many channels, and no broadcast call). *One per user*: each request names one user, round robin, 16 requests in flight.\n\n", sc.Conns, sc.Duration, sc.Window)
		b.WriteString("| target | requests | deliveries/s | p50 ms | p99 ms | lost | server CPU µs per delivery | firetower ÷ centrifuge, deliveries/s | firetower ÷ centrifuge, CPU per delivery |\n|---|---|---|---|---|---|---|---|---|\n")
		for k, way := range []string{"to all 1,000 users", "one per user"} {
			for _, t := range targets {
				rs := by(t.Name, "")
				uf := func(g func(usersPhase) float64) func(record) (float64, bool) {
					return func(r record) (float64, bool) {
						if len(r.Load.Users) <= k || r.Load.Users[k].Delivered == 0 {
							return 0, false
						}
						return g(r.Load.Users[k]), true
					}
				}
				var lost, errs int64
				n := 0
				for _, r := range rs {
					if len(r.Load.Users) > k {
						lost += r.Load.Users[k].Lost
						errs += r.Load.Users[k].Errors
						n++
					}
				}
				if n == 0 {
					fmt.Fprintf(b, "| %s, %s | failed | | | | | | | |\n", t.Name, way)
					continue
				}
				dps := uf(func(p usersPhase) float64 { return p.DPS })
				cpu := uf(func(p usersPhase) float64 { return p.CPU / float64(p.Delivered) * 1e6 })
				vsD, vsC := "—", "—"
				if t.Name == "firetower" {
					vsD = roundRatio(recs, rounds, is("firetower", ""), is("centrifuge", ""), dps)
					vsC = roundRatio(recs, rounds, is("firetower", ""), is("centrifuge", ""), cpu)
				}
				reqs := fmt.Sprintf("%.0f", medOf(rs, uf(func(p usersPhase) float64 { return float64(p.Requests) })))
				if errs > 0 {
					reqs += fmt.Sprintf(" (%d errors)", errs)
				}
				fmt.Fprintf(b, "| %s, %s | %s | %.0f | %.2f | %.2f | %d | %.2f | %s | %s |\n", t.Name, way, reqs, medOf(rs, dps),
					medOf(rs, uf(func(p usersPhase) float64 { return p.P50Ms })), medOf(rs, uf(func(p usersPhase) float64 { return p.P99Ms })),
					lost, medOf(rs, cpu), vsD, vsC)
				if k == 0 {
					cd.Targets = append(cd.Targets, t.Name)
					cd.Values = append(cd.Values, medOf(rs, dps))
				}
			}
		}
		b.WriteString("\n(Requests: median per round; lost: summed over the rounds. p50/p99 are under the saturating window, so queueing dominates them, as in the throughput scenarios.)\n")
	}
	return cd
}
