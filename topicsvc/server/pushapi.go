package server

import (
	"context"
	"errors"
	"fmt"

	"github.com/OSMeteor/firetower/broker"
	"github.com/OSMeteor/firetower/topicsvc/internal/wire"
	pb "github.com/OSMeteor/firetower/topicsvc/topicsvcpb"
	"github.com/google/uuid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func invalid(err error) error { return status.Error(codes.InvalidArgument, err.Error()) }

// Publish implements the push API.
func (s *Server) Publish(_ context.Context, req *pb.PublishRequest) (*pb.PublishResponse, error) {
	topics := req.GetTopics()
	if req.GetTopic() != "" {
		topics = append([]string{req.GetTopic()}, topics...)
	}
	if len(topics) == 0 {
		return nil, invalid(errors.New("topicsvc: publish needs topic or topics"))
	}
	if len(topics) > s.cfg.MaxPublishTopics {
		return nil, invalid(fmt.Errorf("topicsvc: publish to %d topics, the limit is %d", len(topics), s.cfg.MaxPublishTopics))
	}
	data := []byte(req.GetData())
	if len(data) > s.cfg.MaxMessageSize {
		return nil, invalid(fmt.Errorf("topicsvc: data of %d bytes, the limit is %d", len(data), s.cfg.MaxMessageSize))
	}
	// Nodes embed the data in their websocket frames as raw JSON, so
	// anything else would corrupt their clients' streams.
	if err := wire.ValidData(data); err != nil {
		return nil, invalid(err)
	}
	var opts *broker.StreamOptions
	if req.GetHistorySize() != 0 || req.GetHistoryTtlMs() != 0 {
		o, err := wire.StreamOptions(req.GetHistorySize(), req.GetHistoryTtlMs())
		if err != nil {
			return nil, invalid(fmt.Errorf("%w (history_size and history_ttl_ms go together)", err))
		}
		opts = &o
	}
	id := req.GetId()
	if id == "" {
		id = uuid.NewString()
	}
	seen := make(map[string]struct{}, len(topics))
	uniq := topics[:0:0]
	for _, t := range topics {
		if err := wire.ValidMessage(t, id, len(data), s.cfg.MaxMessageSize); err != nil {
			return nil, invalid(err)
		}
		if _, dup := seen[t]; !dup {
			seen[t] = struct{}{}
			uniq = append(uniq, t)
		}
	}
	resp := &pb.PublishResponse{Id: id, Topics: uniq}
	var nodes int
	for _, t := range uniq {
		m := broker.Message{Topic: t, ID: id, Data: data}
		pos, n, ok := s.publish(m, opts)
		nodes += n
		if ok {
			if resp.Offsets == nil {
				resp.Offsets, resp.Epochs = map[string]uint64{}, map[string]string{}
			}
			resp.Offsets[t], resp.Epochs[t] = pos.Offset, pos.Epoch
		}
	}
	resp.Nodes = int64(nodes)
	s.stats.publishedAPI.Add(int64(len(uniq)))
	s.stats.publishedBytes.Add(int64(len(uniq) * len(data)))
	s.stats.routed.Add(int64(nodes))
	return resp, nil
}

// publish is the push API's rule for one topic: with history options,
// the message goes into the topic's stream, kept as they say; without
// them, into the stream the Core keeps of the topic, if any, as that
// stream's last publish said (so that a backend's message to a topic with
// history reaches the clients that recover it, as a node's does);
// otherwise it is a plain publish. ok reports a stream publish at pos.
func (s *Server) publish(m broker.Message, opts *broker.StreamOptions) (pos broker.StreamPosition, nodes int, ok bool) {
	if opts != nil {
		pos, nodes = s.core.PublishStreamCount(m, *opts)
		return pos, nodes, true
	}
	if pos, nodes, ok = s.core.PublishKept(m); ok {
		return pos, nodes, true
	}
	return broker.StreamPosition{}, s.core.Publish(m), false
}

// History implements the push API: one page of a topic's stream, without
// starting one.
func (s *Server) History(_ context.Context, req *pb.HistoryRequest) (*pb.HistoryResponse, error) {
	if err := wire.ValidTopic(req.GetTopic()); err != nil {
		return nil, invalid(err)
	}
	q := broker.HistoryQuery{Limit: wire.QueryLimit(req.GetLimit())}
	if since := req.GetSince(); since != nil {
		q.Since = &broker.StreamPosition{Epoch: since.GetEpoch(), Offset: since.GetOffset()}
	}
	s.stats.historyAPI.Add(1)
	r, more, _ := s.core.HistoryKept(req.GetTopic(), q, s.pageBytes)
	resp := &pb.HistoryResponse{Topic: req.GetTopic(), Epoch: r.Epoch, Offset: r.Offset, Truncated: more}
	if len(r.Messages) > 0 {
		resp.Messages = make([]*pb.HistoryMessage, len(r.Messages))
		for i, m := range r.Messages {
			// Stream data was checked as JSON in UTF-8 when it was
			// published, so it is a valid protobuf string.
			resp.Messages[i] = &pb.HistoryMessage{Id: m.ID, Offset: m.Offset, Data: string(m.Data)}
		}
	}
	return resp, nil
}

// Presence implements the push API: a topic's presence, with at most
// limit of its connections (wire.MaxPresenceLimit), within about
// wire.PresencePageBytes.
func (s *Server) Presence(_ context.Context, req *pb.PresenceRequest) (*pb.PresenceResponse, error) {
	a, _, _, err := s.presence(req.GetTopic(), req.GetLimit())
	if err != nil {
		return nil, invalid(err)
	}
	s.stats.presenceAPI.Add(1)
	return &pb.PresenceResponse{Topic: req.GetTopic(), Users: a.users, Connections: a.connections, Clients: a.clients, Truncated: a.truncated}, nil
}

// Count implements the push API.
func (s *Server) Count(_ context.Context, req *pb.CountRequest) (*pb.CountResponse, error) {
	if err := wire.ValidTopic(req.GetTopic()); err != nil {
		return nil, invalid(err)
	}
	return &pb.CountResponse{Topic: req.GetTopic(), Count: int64(s.core.Count(req.GetTopic()))}, nil
}

// Listing chunks: a TopicsResponse of 4,096 topics of 256 bytes is about
// 1 MiB, well under the 4 MiB a gRPC client receives by default; a node
// entry is at most 128 bytes of id and three numbers.
const (
	topicsChunk = 4096
	nodesChunk  = 1024
)

// Topics implements the push API: the listing as a stream of chunks, shard
// by shard of the Core, so that it scales to any number of topics.
func (s *Server) Topics(_ *pb.TopicsRequest, stream pb.TopicService_TopicsServer) error {
	return s.core.EachTopicShard(func(tcs []broker.TopicCount) error {
		for len(tcs) > 0 {
			n := min(len(tcs), topicsChunk)
			out := make([]*pb.TopicCount, n)
			for i, tc := range tcs[:n] {
				out[i] = &pb.TopicCount{Topic: tc.Topic, Count: int64(tc.Count)}
			}
			if err := stream.Send(&pb.TopicsResponse{Topics: out}); err != nil {
				return err
			}
			tcs = tcs[n:]
		}
		return nil
	})
}

// Nodes implements the push API: the nodes in chunks, sorted by id.
func (s *Server) Nodes(_ *pb.NodesRequest, stream pb.TopicService_NodesServer) error {
	ns := s.core.Nodes()
	for len(ns) > 0 {
		n := min(len(ns), nodesChunk)
		out := make([]*pb.NodeInfo, n)
		for i, nd := range ns[:n] {
			out[i] = &pb.NodeInfo{Id: nd.ID, Connections: int64(nd.Connections), Topics: int64(nd.Topics), LastHeartbeat: nd.LastHeartbeat}
		}
		if err := stream.Send(&pb.NodesResponse{Nodes: out}); err != nil {
			return err
		}
		ns = ns[n:]
	}
	return nil
}
