package server

import (
	"context"
	"crypto/subtle"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

// role is what a token allows.
type role int

const (
	roleNone role = iota
	// roleAPI (Config.APIToken, for backends): the push API and
	// reflection, never a node session.
	roleAPI
	// roleNode (Config.Token): node sessions, and the push API too, since
	// a node lists topics and nodes through it and can publish and count
	// through its session anyway.
	roleNode
)

var errNoToken = status.Error(codes.Unauthenticated, "topicsvc: missing or wrong token (want metadata authorization: Bearer <token>)")

// roleOf checks the call's bearer token in constant time against both
// tokens.
func (s *Server) roleOf(ctx context.Context) role {
	md, _ := metadata.FromIncomingContext(ctx)
	for _, v := range md.Get("authorization") {
		if subtle.ConstantTimeCompare([]byte(v), s.nodeAuth) == 1 {
			return roleNode
		}
		if s.apiAuth != nil && subtle.ConstantTimeCompare([]byte(v), s.apiAuth) == 1 {
			return roleAPI
		}
	}
	return roleNone
}

// unaryAuth guards the push API calls, counting them and their refusals.
func (s *Server) unaryAuth(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	if s.roleOf(ctx) == roleNone {
		s.stats.refusedAuth.Add(1)
		s.refusals.note(refusedPush, peerAddr(ctx), errNoToken)
		return nil, errNoToken
	}
	s.stats.apiCalled(info.FullMethod)
	resp, err := h(ctx, req)
	if status.Code(err) == codes.InvalidArgument {
		s.stats.refusedInvalid.Add(1)
		s.refusals.note(refusedInvalid, peerAddr(ctx), err)
	}
	return resp, err
}

// streamAuth guards the node sessions, the listings (Topics, Nodes) and
// server reflection.
func (s *Server) streamAuth(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
	ctx := ss.Context()
	r := s.roleOf(ctx)
	session := info.FullMethod == sessionMethod
	switch {
	case r == roleNone:
		s.stats.refusedAuth.Add(1)
		kind := refusedPush
		if session {
			kind = refusedNode
		} else if strings.HasPrefix(info.FullMethod, "/grpc.reflection.") {
			kind = refusedReflection
		}
		s.refusals.note(kind, peerAddr(ctx), errNoToken)
		return errNoToken
	case session && r != roleNode:
		err := status.Error(codes.PermissionDenied, "topicsvc: the API token cannot open a node session; nodes use the node token")
		s.stats.refusedAuth.Add(1)
		s.refusals.note(refusedNode, peerAddr(ctx), err)
		return err
	}
	if !session {
		s.stats.apiCalled(info.FullMethod) // counts the listings, Topics and Nodes
	}
	return h(srv, ss)
}

// sessionMethod is the node stream's full gRPC method name.
const sessionMethod = "/firetower.topicsvc.v1.TopicService/Session"

// peerAddr is the caller's address, for the logs.
func peerAddr(ctx context.Context) string {
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		return p.Addr.String()
	}
	return ""
}
