package server

import (
	"strings"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
)

// Why a node's session ended, as counted by
// firetower_topicsvc_node_disconnects_total{reason}.
const (
	reasonLeft      = "left"              // the node closed its broker
	reasonHeartbeat = "heartbeat_timeout" // the node stayed silent too long
	reasonSlow      = "slow"              // its outgoing queue was full
	reasonStream    = "stream_error"      // the stream broke (network, a protocol error)
	reasonReplaced  = "replaced"          // a new session of the same node id arrived
	reasonShutdown  = "shutdown"          // the service is stopping
)

var disconnectReasons = [...]string{reasonLeft, reasonHeartbeat, reasonSlow, reasonStream, reasonReplaced, reasonShutdown}

// pushMethods are the unary calls of the push API, as counted by
// firetower_topicsvc_api_calls_total{method}.
var pushMethods = [...]string{"Publish", "Count", "Topics", "Nodes", "History", "Presence"}

// counters are the service's figures. The hot path only adds to
// atomics, most of them once per stream frame rather than per message;
// the collector reads them at scrape time.
type counters struct {
	sessions       atomic.Int64 // node sessions accepted
	publishedNode  atomic.Int64 // messages nodes published
	publishedAPI   atomic.Int64 // messages the push API published, one per topic
	publishedBytes atomic.Int64 // their data
	routed         atomic.Int64 // deliveries queued for nodes
	delivered      atomic.Int64 // deliveries written to node streams
	deliveredBytes atomic.Int64 // their data
	framesIn       atomic.Int64 // stream messages received from nodes
	framesOut      atomic.Int64 // stream messages sent to nodes
	historyNode    atomic.Int64 // history queries of node sessions
	historyAPI     atomic.Int64 // push API History calls answered
	presenceOps    atomic.Int64 // presence adds and removes of node sessions applied
	presenceNode   atomic.Int64 // presence queries of node sessions answered
	presenceAPI    atomic.Int64 // push API Presence calls answered
	refusedAuth    atomic.Int64
	refusedInvalid atomic.Int64
	disconnects    [len(disconnectReasons)]atomic.Int64
	apiCalls       [len(pushMethods)]atomic.Int64
}

func (st *counters) disconnected(reason string) {
	for i, r := range disconnectReasons {
		if r == reason {
			st.disconnects[i].Add(1)
			return
		}
	}
}

// apiCalled counts a push API call; fullMethod is gRPC's
// "/package.Service/Method".
func (st *counters) apiCalled(fullMethod string) {
	name := fullMethod[strings.LastIndexByte(fullMethod, '/')+1:]
	for i, m := range pushMethods {
		if m == name {
			st.apiCalls[i].Add(1)
			return
		}
	}
}

// Collector returns a prometheus.Collector of the service's figures,
// computed when scraped (names and meanings in topicsvc/README.md). Register
// it on a registry of your own; the firetower-topicsvc binary serves it
// with -metrics-listen.
func (s *Server) Collector() prometheus.Collector { return &collector{s: s} }

type collector struct{ s *Server }

func desc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc("firetower_topicsvc_"+name, help, labels, nil)
}

var (
	descNodes          = desc("nodes", "Nodes with a session at the service.")
	descTopics         = desc("topics", "Topics at least one node listens to.")
	descSubscriptions  = desc("subscriptions", "Node-topic interests: the (node, topic) pairs the service routes.")
	descSubscribers    = desc("subscribers", "Subscribed connections as the nodes report them, summed over nodes and topics.")
	descQueued         = desc("queued_operations", "Operations waiting to be sent to nodes.")
	descSessions       = desc("node_sessions_total", "Node sessions accepted.")
	descPublished      = desc("messages_published_total", "Messages published, one per topic, by nodes or through the push API.", "source")
	descPublishedBytes = desc("published_bytes_total", "Data bytes of the messages published.")
	descRouted         = desc("messages_routed_total", "Deliveries queued for nodes: one per message and node listening to its topic.")
	descDelivered      = desc("messages_delivered_total", "Deliveries written to node streams.")
	descDeliveredBytes = desc("delivered_bytes_total", "Data bytes of the deliveries written to node streams.")
	descFramesIn       = desc("frames_received_total", "Stream messages received from nodes (each carries one or more operations).")
	descFramesOut      = desc("frames_sent_total", "Stream messages sent to nodes (each carries one or more operations).")
	descDisconnects    = desc("node_disconnects_total", "Node sessions ended, by reason: left, heartbeat_timeout, slow, stream_error, replaced, shutdown.", "reason")
	descRefused        = desc("refused_total", "Requests refused, by reason: auth (missing or wrong token) or invalid (bad input, answered INVALID_ARGUMENT or refused in a session).", "reason")
	descAPICalls       = desc("api_calls_total", "Authorized push API calls, by method.", "method")
	descHistory        = desc("history_queries_total", "History reads answered, by source: node (a session's query) or api (the push API's History).", "source")

	// The Core's streams (topicsvc.StreamStats).
	descStreams        = desc("streams", "Streams (topics' kept messages) the service holds.")
	descStreamMessages = desc("stream_messages", "Messages held over all streams.")
	descStreamBytes    = desc("stream_bytes", "Memory of the streams as counted against the cap: data, ids and a fixed overhead per message.")
	descStreamMaxBytes = desc("stream_max_bytes", "The streams' memory cap (-max-stream-bytes).")
	descStreamsEvicted = desc("streams_evicted_total", "Streams forgotten whole for the memory cap, the least recently published first.")
	descStreamsExpired = desc("streams_expired_total", "Streams forgotten because nothing was published to them for their TTL.")
	descStreamsTrimmed = desc("stream_messages_trimmed_total", "Messages dropped from a stream that alone held more than the memory cap.")

	// The Core's presence (topicsvc.PresenceStats) and its operations.
	descPresenceEntries = desc("presence_entries", "Presence entries (a connection in a topic) over all topics.")
	descPresenceTopics  = desc("presence_topics", "Topics with presence state: entries, or a leave waiting for its grace.")
	descPresencePending = desc("presence_pending_leaves", "Leaves waiting for their grace.")
	descPresenceEvents  = desc("presence_events_total", "Join and leave events published, by kind: join or leave.", "kind")
	descPresenceOps     = desc("presence_operations_total", "Presence adds and removes of node sessions applied.")
	descPresenceQueries = desc("presence_queries_total", "Presence reads answered, by source: node (a session's query) or api (the push API's Presence).", "source")
)

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descNodes, descTopics, descSubscriptions, descSubscribers, descQueued, descSessions,
		descPublished, descPublishedBytes, descRouted, descDelivered, descDeliveredBytes, descFramesIn, descFramesOut,
		descDisconnects, descRefused, descAPICalls, descHistory,
		descStreams, descStreamMessages, descStreamBytes, descStreamMaxBytes, descStreamsEvicted, descStreamsExpired, descStreamsTrimmed,
		descPresenceEntries, descPresenceTopics, descPresencePending, descPresenceEvents, descPresenceOps, descPresenceQueries} {
		ch <- d
	}
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	s, st := c.s, &c.s.stats
	gauge := func(d *prometheus.Desc, v int64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, float64(v), labels...)
	}
	counter := func(d *prometheus.Desc, v int64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}

	s.mu.Lock()
	nodes := len(s.sessions)
	var queued int64
	for _, ss := range s.sessions {
		queued += int64(ss.queueLen())
	}
	s.mu.Unlock()
	rs := s.core.RouteStats()

	gauge(descNodes, int64(nodes))
	gauge(descTopics, int64(rs.Topics))
	gauge(descSubscriptions, int64(rs.Subscriptions))
	gauge(descSubscribers, int64(rs.Subscribers))
	gauge(descQueued, queued)
	counter(descSessions, st.sessions.Load())
	counter(descPublished, st.publishedNode.Load(), "node")
	counter(descPublished, st.publishedAPI.Load(), "api")
	counter(descPublishedBytes, st.publishedBytes.Load())
	counter(descRouted, st.routed.Load())
	counter(descDelivered, st.delivered.Load())
	counter(descDeliveredBytes, st.deliveredBytes.Load())
	counter(descFramesIn, st.framesIn.Load())
	counter(descFramesOut, st.framesOut.Load())
	for i, r := range disconnectReasons {
		counter(descDisconnects, st.disconnects[i].Load(), r)
	}
	counter(descRefused, st.refusedAuth.Load(), "auth")
	counter(descRefused, st.refusedInvalid.Load(), "invalid")
	for i, m := range pushMethods {
		counter(descAPICalls, st.apiCalls[i].Load(), m)
	}
	counter(descHistory, st.historyNode.Load(), "node")
	counter(descHistory, st.historyAPI.Load(), "api")
	ss := s.core.StreamStats()
	gauge(descStreams, ss.Streams)
	gauge(descStreamMessages, ss.Messages)
	gauge(descStreamBytes, ss.Bytes)
	gauge(descStreamMaxBytes, ss.MaxBytes)
	counter(descStreamsEvicted, ss.Evicted)
	counter(descStreamsExpired, ss.Expired)
	counter(descStreamsTrimmed, ss.Trimmed)
	ps := s.core.PresenceStats()
	gauge(descPresenceEntries, ps.Entries)
	gauge(descPresenceTopics, ps.Topics)
	gauge(descPresencePending, ps.Pending)
	counter(descPresenceEvents, ps.Joins, "join")
	counter(descPresenceEvents, ps.Leaves, "leave")
	counter(descPresenceOps, st.presenceOps.Load())
	counter(descPresenceQueries, st.presenceNode.Load(), "node")
	counter(descPresenceQueries, st.presenceAPI.Load(), "api")
}
