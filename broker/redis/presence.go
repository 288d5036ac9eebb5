//go:build redis

package redis

import (
	"bytes"
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/OSMeteor/firetower/broker"
	goredis "github.com/redis/go-redis/v9"
)

// Presence (broker.Presencer). A topic's entries and user counts are two
// hashes in the slot of the topic's channel, and every change to them is
// one Lua script that also decides and publishes the join or leave it
// causes, so that nodes racing on one topic produce one event per user
// and change. The layout is in lua/presence.lua and the package
// documentation.

var (
	//go:embed lua/presence.lua
	presenceLua string
	//go:embed lua/presence_add.lua
	presenceAddLua string
	//go:embed lua/presence_remove.lua
	presenceRemoveLua string
	//go:embed lua/presence_sweep.lua
	presenceSweepLua string
	//go:embed lua/presence_beat.lua
	presenceBeatLua string

	presenceAddScript    = goredis.NewScript(presenceLua + presenceAddLua)
	presenceRemoveScript = goredis.NewScript(presenceLua + presenceRemoveLua)
	presenceSweepScript  = goredis.NewScript(presenceLua + presenceSweepLua)
	presenceBeatScript   = goredis.NewScript(presenceLua + presenceBeatLua)
)

var _ broker.Presencer = (*Broker)(nil)

const (
	// sweepInterval is how often every node sweeps every slot group for
	// due leaves and dead nodes' entries.
	sweepInterval = 500 * time.Millisecond
	// sweepBatch bounds the leaves and entries one sweep script handles;
	// a sweep calls the script again while the batch runs out, for at
	// most sweepBudget, and goes on at the next sweep.
	sweepBatch  = 1000
	sweepBudget = 300 * time.Millisecond
	// scriptChunk is how many scripts go in one pipeline when a node adds
	// or removes many entries at once (a resync, Close).
	scriptChunk = 512
)

// The node's state in a slot group's registry, as the scripts answer it.
const (
	nodeMissing = 0 // not registered: new, removed as dead, or Redis lost it
	nodeExpired = 1 // its deadline passed: other nodes may be removing its entries
	nodeAlive   = 2
)

// presenceKeys are the keys and prefixes of one slot group (see
// lua/presence.lua); on Redis Cluster they carry the group's hash tag.
type presenceKeys struct {
	entries, users, sets, channels string // prefixes: + topic, + node, + topic
	pending, registry              string
	nodeSet                        string // this node's set
}

func newPresenceKeys(prefix, channels, tag, node string) presenceKeys {
	group := ""
	if tag != "" {
		group = ":" + strings.TrimSuffix(tag, ":")
	}
	k := presenceKeys{
		entries:  prefix + ":pc:" + tag,
		users:    prefix + ":pu:" + tag,
		sets:     prefix + ":pn:" + tag,
		channels: channels,
		pending:  prefix + ":pl" + group,
		registry: prefix + ":pr" + group,
	}
	k.nodeSet = k.sets + node
	return k
}

// presenceKey is one entry of the node: a connection in a topic.
type presenceKey struct{ topic, conn string }

type presenceEntry struct {
	user, info string
	opts       broker.PresenceOptions
}

// presence is the node's own entries, the truth that Redis mirrors: after
// a reconnection, or when the node finds it was declared dead, it adds
// them again.
type presence struct {
	// op is held shared by AddPresence and RemovePresence around their
	// change of the entries and their scripts, and exclusively by a
	// repair, so that what a repair adds again is what the node holds.
	op sync.RWMutex

	mu       sync.Mutex
	entries  map[presenceKey]presenceEntry
	perGroup []int  // entries per slot group
	resync   []bool // slot groups whose entries Redis may lack
	// known is the slot groups where a script registered the node
	known []bool
	// retry holds the removals Redis did not confirm, with their options;
	// repairs run them again (a removal is idempotent).
	retry map[presenceKey]broker.PresenceOptions
}

func (p *presence) init(groups int) {
	p.entries = map[presenceKey]presenceEntry{}
	p.perGroup = make([]int, groups)
	p.resync = make([]bool, groups)
	p.known = make([]bool, groups)
	p.retry = map[presenceKey]broker.PresenceOptions{}
}

// markResync makes the next repair add the entries of group g again, as
// after a lost connection.
func (p *presence) markResync(g int) {
	p.mu.Lock()
	p.resync[g] = true
	p.mu.Unlock()
}

// groupOf returns the slot group of topic: the index of its reader.
func (b *Broker) groupOf(topic string) int {
	if len(b.readers) == 1 {
		return 0
	}
	return int(fnv32a(topic) % uint32(len(b.readers)))
}

// validPresence checks a client and topics as every broker must take
// them, and returns the topics without repeats and the info compacted.
func validPresence(c broker.PresenceClient, topics []string, adding bool) ([]string, string, error) {
	fail := func(format string, a ...any) ([]string, string, error) {
		return nil, "", fmt.Errorf("firetower: redis broker: presence: "+format, a...)
	}
	if c.Conn == "" {
		return fail("empty conn")
	}
	if !utf8.ValidString(c.Conn) || !utf8.ValidString(c.User) {
		return fail("conn and user must be valid UTF-8")
	}
	info := ""
	if adding && len(c.Info) > 0 {
		if len(c.Info) > broker.MaxPresenceInfo {
			return fail("info of %d bytes, more than %d", len(c.Info), broker.MaxPresenceInfo)
		}
		if !utf8.Valid(c.Info) {
			return fail("info is not valid UTF-8")
		}
		var buf bytes.Buffer
		if err := json.Compact(&buf, c.Info); err != nil {
			return fail("info is not JSON: %v", err)
		}
		if buf.Len() == 0 || buf.Bytes()[0] != '{' {
			return fail("info is not a JSON object")
		}
		info = buf.String()
	}
	seen := make(map[string]struct{}, len(topics))
	out := make([]string, 0, len(topics))
	for _, t := range topics {
		if len(t) > broker.MaxTopicLen {
			return fail("topic of %d bytes, more than %d", len(t), broker.MaxTopicLen)
		}
		if _, dup := seen[t]; dup {
			continue
		}
		seen[t] = struct{}{}
		out = append(out, t)
	}
	return out, info, nil
}

func flag(on bool) string {
	if on {
		return "1"
	}
	return "0"
}

// graceMs is Grace in whole milliseconds, rounded up: a positive grace
// never becomes 0 (at once).
func graceMs(d time.Duration) int64 {
	if d <= 0 {
		return 0
	}
	return (d + time.Millisecond - 1).Milliseconds()
}

// scriptCall is one script to run in a pipeline, with its answer.
type scriptCall struct {
	keys []string
	args []any
	cmd  *goredis.Cmd
}

// presenceTTL is how far ahead a node's beat moves its deadline in the
// registries: NodeTTL less a sweep interval (at most NodeTTL/5, the
// heartbeat period), so that the sweep after the deadline comes within
// NodeTTL of the node's last heartbeat.
func (b *Broker) presenceTTL() int64 {
	return (b.opts.NodeTTL - min(sweepInterval, b.opts.NodeTTL/5)).Milliseconds()
}

func (b *Broker) addCall(topic, conn string, e presenceEntry) scriptCall {
	g := b.groupOf(topic)
	k := &b.pkeys[g]
	return scriptCall{
		keys: []string{k.entries + topic, k.users + topic, k.nodeSet, k.pending, k.registry},
		args: []any{topic, conn, e.user, e.info, b.opts.NodeID, flag(e.opts.JoinLeave), graceMs(e.opts.Grace),
			b.presenceTTL(), k.channels + topic, flag(b.sharded), k.sets},
	}
}

func (b *Broker) removeCall(topic, conn string, opts broker.PresenceOptions) scriptCall {
	k := &b.pkeys[b.groupOf(topic)]
	return scriptCall{
		keys: []string{k.entries + topic, k.users + topic, k.nodeSet, k.pending},
		args: []any{topic, conn, b.opts.NodeID, flag(opts.JoinLeave), graceMs(opts.Grace), k.channels + topic, flag(b.sharded)},
	}
}

// runScripts runs calls, scriptChunk to a pipeline, with EVALSHA, and
// those that Redis did not know the script for again with EVAL (which
// loads it). Each pipeline is bounded by Timeout, as a round trip. It
// returns the first error of a call.
func (b *Broker) runScripts(ctx context.Context, s *goredis.Script, calls []scriptCall) error {
	for len(calls) > 0 {
		chunk := calls[:min(len(calls), scriptChunk)]
		calls = calls[len(chunk):]
		if err := b.runChunk(ctx, s, chunk); err != nil {
			return err
		}
	}
	return nil
}

func (b *Broker) runChunk(ctx context.Context, s *goredis.Script, chunk []scriptCall) error {
	ctx, cancel := b.opCtx(ctx)
	defer cancel()
	pipe := b.client.Pipeline()
	for i := range chunk {
		chunk[i].cmd = s.EvalSha(ctx, pipe, chunk[i].keys, chunk[i].args...)
	}
	_, _ = pipe.Exec(ctx) // each command carries its own error
	var again goredis.Pipeliner
	for i := range chunk {
		if isNoScript(chunk[i].cmd.Err()) {
			if again == nil {
				again = b.client.Pipeline()
			}
			chunk[i].cmd = s.Eval(ctx, again, chunk[i].keys, chunk[i].args...)
		}
	}
	if again != nil {
		_, _ = again.Exec(ctx)
	}
	for i := range chunk {
		if err := chunk[i].cmd.Err(); err != nil {
			return err
		}
	}
	return nil
}

// AddPresence implements broker.Presencer: one script per topic, in one
// pipeline. The node records the entries first; on an error they stay
// recorded until the caller removes them, and a repair may add them.
func (b *Broker) AddPresence(ctx context.Context, c broker.PresenceClient, topics []string, opts broker.PresenceOptions) error {
	if err := b.ready(); err != nil {
		return err
	}
	topics, info, err := validPresence(c, topics, true)
	if err != nil || len(topics) == 0 {
		return err
	}
	e := presenceEntry{user: c.User, info: info, opts: opts}
	p := &b.presence
	p.op.RLock()
	defer p.op.RUnlock()
	p.mu.Lock()
	for _, t := range topics {
		k := presenceKey{t, c.Conn}
		if _, had := p.entries[k]; !had {
			p.perGroup[b.groupOf(t)]++
		}
		p.entries[k] = e
		delete(p.retry, k)
	}
	p.mu.Unlock()
	calls := make([]scriptCall, len(topics))
	for i, t := range topics {
		calls[i] = b.addCall(t, c.Conn, e)
	}
	if err := b.runScripts(ctx, presenceAddScript, calls); err != nil {
		return b.fail(ctx, "add presence", err)
	}
	p.mu.Lock()
	for i, call := range calls {
		state, _ := call.cmd.Int64()
		p.registered(b.groupOf(topics[i]), state)
	}
	p.mu.Unlock()
	return nil
}

// registered takes the node's state in group g's registry before a script
// that registered it there, with p.mu held. Not alive there means that its
// entries of the group may be gone (declared dead, or Redis lost them),
// and the group is repaired; adding entries again costs little when they
// are there. A node registering for the first time in a group was not
// there either, and has nothing to repair.
func (p *presence) registered(g int, state int64) {
	if state == nodeExpired || state == nodeMissing && p.known[g] {
		p.resync[g] = true
	}
	p.known[g] = true
}

// RemovePresence implements broker.Presencer: one script per topic, in
// one pipeline. The node forgets the entries at once; removals that Redis
// did not confirm are retried by the node until they are.
func (b *Broker) RemovePresence(ctx context.Context, c broker.PresenceClient, topics []string, opts broker.PresenceOptions) error {
	if err := b.ready(); err != nil {
		return err
	}
	topics, _, err := validPresence(c, topics, false)
	if err != nil || len(topics) == 0 {
		return err
	}
	p := &b.presence
	p.op.RLock()
	defer p.op.RUnlock()
	p.mu.Lock()
	for _, t := range topics {
		k := presenceKey{t, c.Conn}
		if _, had := p.entries[k]; had {
			p.perGroup[b.groupOf(t)]--
			delete(p.entries, k)
		}
	}
	p.mu.Unlock()
	calls := make([]scriptCall, len(topics))
	for i, t := range topics {
		calls[i] = b.removeCall(t, c.Conn, opts)
	}
	if err := b.runScripts(ctx, presenceRemoveScript, calls); err != nil {
		p.mu.Lock()
		for _, t := range topics {
			k := presenceKey{t, c.Conn}
			if _, readded := p.entries[k]; !readded {
				p.retry[k] = opts
			}
		}
		p.mu.Unlock()
		return b.fail(ctx, "remove presence", err)
	}
	return nil
}

// Presence implements broker.Presencer: in one MULTI, the lengths of the
// topic's two hashes and, with a limit, HRANDFIELD of that many entries
// (distinct; O(limit), not O(entries), for a limit well below their
// number).
func (b *Broker) Presence(ctx context.Context, topic string, limit int) (broker.PresenceResult, error) {
	if err := b.ready(); err != nil {
		return broker.PresenceResult{}, err
	}
	if len(topic) > broker.MaxTopicLen {
		return broker.PresenceResult{}, fmt.Errorf("firetower: redis broker: presence: topic of %d bytes, more than %d", len(topic), broker.MaxTopicLen)
	}
	k := &b.pkeys[b.groupOf(topic)]
	entries, users := k.entries+topic, k.users+topic
	opCtx, cancel := b.opCtx(ctx)
	defer cancel()
	tx := b.client.TxPipeline()
	nConns := tx.HLen(opCtx, entries)
	nUsers := tx.HLen(opCtx, users)
	var list *goredis.KeyValueSliceCmd
	if limit > 0 {
		list = tx.HRandFieldWithValues(opCtx, entries, limit)
	}
	if _, err := tx.Exec(opCtx); err != nil {
		return broker.PresenceResult{}, b.fail(ctx, "presence", err)
	}
	r := broker.PresenceResult{Users: int(nUsers.Val()), Connections: int(nConns.Val())}
	if list == nil {
		return r, nil
	}
	kvs := list.Val()
	r.Clients = make([]broker.PresenceClient, 0, len(kvs))
	for _, kv := range kvs {
		_, user, info, err := decodeEntry(kv.Value)
		if err != nil {
			return broker.PresenceResult{}, fmt.Errorf("firetower: redis broker: presence of %q: entry of %q: %w", topic, kv.Key, err)
		}
		c := broker.PresenceClient{Conn: kv.Key, User: user}
		if info != "" {
			c.Info = json.RawMessage(info)
		}
		r.Clients = append(r.Clients, c)
	}
	return r, nil
}

var errBadEntry = errors.New("malformed presence entry")

// unpack splits pack(a, b) (see lua/presence.lua) into a and b.
func unpack(s string) (a, b string, err error) {
	i := strings.IndexByte(s, ':')
	if i < 0 {
		return "", "", errBadEntry
	}
	n, err := strconv.Atoi(s[:i])
	if err != nil || n < 0 || n > len(s)-i-1 {
		return "", "", errBadEntry
	}
	return s[i+1 : i+1+n], s[i+1+n:], nil
}

// decodeEntry reads an entry: flag, pack(node, pack(user, info)).
func decodeEntry(e string) (node, user, info string, err error) {
	if e == "" {
		return "", "", "", errBadEntry
	}
	node, rest, err := unpack(e[1:])
	if err != nil {
		return "", "", "", err
	}
	user, info, err = unpack(rest)
	return node, user, info, err
}

// presenceLoop beats in the registries of the groups where the node has
// entries, every NodeTTL/5, and every sweepInterval repairs what Redis
// lacks of the node's entries and sweeps every group, until Close.
func (b *Broker) presenceLoop() {
	defer b.wg.Done()
	sweep := time.NewTicker(sweepInterval)
	defer sweep.Stop()
	beat := time.NewTicker(b.opts.NodeTTL / 5)
	defer beat.Stop()
	for {
		select {
		case <-beat.C:
			b.presenceBeat()
		case <-sweep.C:
			b.presenceRepair()
			b.sweep()
		case <-b.done:
			return
		}
	}
}

// presenceBeat moves the node's deadline in the registry of every group
// where it has entries (or removals to retry); a group where the node
// was not alive is repaired next.
func (b *Broker) presenceBeat() {
	p := &b.presence
	p.mu.Lock()
	active := make([]bool, len(p.perGroup))
	for g, n := range p.perGroup {
		active[g] = n > 0
	}
	for k := range p.retry {
		active[b.groupOf(k.topic)] = true
	}
	p.mu.Unlock()
	var calls []scriptCall
	var groups []int
	for g, on := range active {
		if on {
			k := &b.pkeys[g]
			calls = append(calls, scriptCall{keys: []string{k.registry, k.nodeSet}, args: []any{b.opts.NodeID, b.presenceTTL()}})
			groups = append(groups, g)
		}
	}
	if len(calls) == 0 {
		return
	}
	if err := b.runScripts(b.ctx, presenceBeatScript, calls); err != nil {
		if !b.closed.Load() {
			b.log.Warn("presence heartbeat failed", "err", err)
		}
		return
	}
	p.mu.Lock()
	for i, call := range calls {
		state, _ := call.cmd.Int64()
		p.registered(groups[i], state)
	}
	p.mu.Unlock()
}

// presenceRepair adds again the node's entries of the groups marked for
// resync and runs the removals to retry. It holds presence.op, so no
// AddPresence or RemovePresence runs meanwhile.
func (b *Broker) presenceRepair() {
	p := &b.presence
	p.mu.Lock()
	need := len(p.retry) > 0
	for _, r := range p.resync {
		need = need || r
	}
	p.mu.Unlock()
	if !need {
		return
	}
	p.op.Lock()
	defer p.op.Unlock()
	p.mu.Lock()
	groups := append([]bool(nil), p.resync...)
	clear(p.resync)
	var adds, removes []scriptCall
	for k, e := range p.entries {
		if groups[b.groupOf(k.topic)] {
			adds = append(adds, b.addCall(k.topic, k.conn, e))
		}
	}
	retried := make([]presenceKey, 0, len(p.retry))
	for k, opts := range p.retry {
		removes = append(removes, b.removeCall(k.topic, k.conn, opts))
		retried = append(retried, k)
	}
	p.mu.Unlock()
	ctx := b.ctx
	if err := b.runScripts(ctx, presenceAddScript, adds); err != nil {
		p.mu.Lock()
		for g, r := range groups {
			p.resync[g] = p.resync[g] || r
		}
		p.mu.Unlock()
		if !b.closed.Load() {
			b.log.Warn("adding the node's presence again failed; retrying", "entries", len(adds), "err", err)
		}
		return
	}
	if len(adds) > 0 {
		b.log.Info("added the node's presence again", "entries", len(adds))
	}
	if err := b.runScripts(ctx, presenceRemoveScript, removes); err != nil {
		if !b.closed.Load() {
			b.log.Warn("removing presence entries failed; retrying", "entries", len(removes), "err", err)
		}
		return
	}
	p.mu.Lock()
	for _, k := range retried {
		delete(p.retry, k)
	}
	p.mu.Unlock()
}

// sweep runs the sweep script of every group, again for the groups whose
// batch ran out, for at most sweepBudget.
func (b *Broker) sweep() {
	groups := make([]int, len(b.pkeys))
	for g := range groups {
		groups[g] = g
	}
	deadline := time.Now().Add(sweepBudget)
	for len(groups) > 0 {
		calls := make([]scriptCall, len(groups))
		for i, g := range groups {
			k := &b.pkeys[g]
			calls[i] = scriptCall{
				keys: []string{k.pending, k.registry},
				args: []any{k.entries, k.users, k.sets, k.channels, flag(b.sharded), sweepBatch},
			}
		}
		if err := b.runScripts(b.ctx, presenceSweepScript, calls); err != nil {
			if !b.closed.Load() {
				b.log.Debug("presence sweep failed", "err", err)
			}
			return
		}
		more := groups[:0]
		for i, call := range calls {
			a, _ := call.cmd.Slice()
			if len(a) == 3 {
				leaves, _ := a[0].(int64)
				removed, _ := a[1].(int64)
				b.stats.presenceLeaves.Add(leaves)
				b.stats.presenceSwept.Add(removed)
				if again, _ := a[2].(int64); again == 1 {
					more = append(more, groups[i])
				}
			}
		}
		groups = more
		if time.Now().After(deadline) {
			return
		}
	}
}

// withdrawPresence removes all the node's entries, for Close: their
// leaves are due after their grace, and swept by any node. In every group
// the node then leaves the registry, or, if some entries are left there,
// is dead at once, for the sweeps to remove them.
func (b *Broker) withdrawPresence() {
	p := &b.presence
	p.op.Lock()
	defer p.op.Unlock()
	p.mu.Lock()
	calls := make([]scriptCall, 0, len(p.entries)+len(p.retry))
	for k, e := range p.entries {
		calls = append(calls, b.removeCall(k.topic, k.conn, e.opts))
	}
	for k, opts := range p.retry {
		calls = append(calls, b.removeCall(k.topic, k.conn, opts))
	}
	clear(p.entries)
	clear(p.retry)
	p.mu.Unlock()
	ctx := context.Background()
	if err := b.runScripts(ctx, presenceRemoveScript, calls); err != nil {
		b.log.Warn("could not remove the node's presence; other nodes remove it", "after", b.opts.NodeTTL, "err", err)
	}
	retire := make([]scriptCall, len(b.pkeys))
	for g := range b.pkeys {
		k := &b.pkeys[g]
		retire[g] = scriptCall{keys: []string{k.registry, k.nodeSet}, args: []any{b.opts.NodeID, -1}}
	}
	if err := b.runScripts(ctx, presenceBeatScript, retire); err != nil {
		b.log.Debug("could not leave the presence registries", "err", err)
	}
}
