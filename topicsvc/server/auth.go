package server

import (
	"context"
	"crypto/subtle"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

// authorized checks the call's bearer token in constant time.
func (s *Server) authorized(ctx context.Context) error {
	md, _ := metadata.FromIncomingContext(ctx)
	for _, v := range md.Get("authorization") {
		if subtle.ConstantTimeCompare([]byte(v), s.auth) == 1 {
			return nil
		}
	}
	return status.Error(codes.Unauthenticated, "topicsvc: missing or wrong token (want metadata authorization: Bearer <token>)")
}

// unaryAuth guards the push API calls, counting them and their refusals.
func (s *Server) unaryAuth(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	if err := s.authorized(ctx); err != nil {
		s.stats.refusedAuth.Add(1)
		s.log.Warn("push call refused", "peer", peerAddr(ctx), "err", err)
		return nil, err
	}
	s.stats.apiCalled(info.FullMethod)
	resp, err := h(ctx, req)
	if status.Code(err) == codes.InvalidArgument {
		s.stats.refusedInvalid.Add(1)
	}
	return resp, err
}

// streamAuth guards the node sessions and server reflection.
func (s *Server) streamAuth(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
	if err := s.authorized(ss.Context()); err != nil {
		s.stats.refusedAuth.Add(1)
		s.log.Warn("node refused", "peer", peerAddr(ss.Context()), "err", err)
		return err
	}
	s.stats.apiCalled(info.FullMethod) // counts the listings, Topics and Nodes
	return h(srv, ss)
}

// peerAddr is the caller's address, for the logs.
func peerAddr(ctx context.Context) string {
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		return p.Addr.String()
	}
	return ""
}
