package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"

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
	if !json.Valid(data) {
		return nil, invalid(errors.New("topicsvc: data must be a JSON text, such as {\"text\":\"hi\"} or \"hi\""))
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
	var nodes int
	for _, t := range uniq {
		nodes += s.core.Publish(broker.Message{Topic: t, ID: id, Data: data})
	}
	s.stats.publishedAPI.Add(int64(len(uniq)))
	s.stats.publishedBytes.Add(int64(len(uniq) * len(data)))
	s.stats.routed.Add(int64(nodes))
	return &pb.PublishResponse{Id: id, Topics: uniq, Nodes: int64(nodes)}, nil
}

// Count implements the push API.
func (s *Server) Count(_ context.Context, req *pb.CountRequest) (*pb.CountResponse, error) {
	if err := wire.ValidTopic(req.GetTopic()); err != nil {
		return nil, invalid(err)
	}
	return &pb.CountResponse{Topic: req.GetTopic(), Count: int64(s.core.Count(req.GetTopic()))}, nil
}

// Topics implements the push API.
func (s *Server) Topics(context.Context, *pb.TopicsRequest) (*pb.TopicsResponse, error) {
	tcs := s.core.Topics()
	sort.Slice(tcs, func(i, j int) bool { return tcs[i].Topic < tcs[j].Topic })
	out := make([]*pb.TopicCount, len(tcs))
	for i, tc := range tcs {
		out[i] = &pb.TopicCount{Topic: tc.Topic, Count: int64(tc.Count)}
	}
	return &pb.TopicsResponse{Topics: out}, nil
}

// Nodes implements the push API.
func (s *Server) Nodes(context.Context, *pb.NodesRequest) (*pb.NodesResponse, error) {
	ns := s.core.Nodes()
	out := make([]*pb.NodeInfo, len(ns))
	for i, n := range ns {
		out[i] = &pb.NodeInfo{Id: n.ID, Connections: int64(n.Connections), Topics: int64(n.Topics), LastHeartbeat: n.LastHeartbeat}
	}
	return &pb.NodesResponse{Nodes: out}, nil
}
