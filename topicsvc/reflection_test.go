package topicsvc_test

import (
	"errors"
	"io"
	"testing"

	"github.com/OSMeteor/firetower/topicsvc/internal/svctest"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	rpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
)

// TestReflection: the service describes itself to tools such as grpcurl,
// behind the same token as the push API.
func TestReflection(t *testing.T) {
	svc := svctest.Start(t, "127.0.0.1:0")
	conn, err := grpc.NewClient(svc.Addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	must(t, err)
	defer conn.Close()
	list := func(token string) ([]string, error) {
		ctx := svctest.Ctx(t)
		if token != "" {
			ctx = withToken(ctx, token)
		}
		stream, err := rpb.NewServerReflectionClient(conn).ServerReflectionInfo(ctx)
		if err != nil {
			return nil, err
		}
		// A refused stream may already be closed when the request goes
		// out: Send then says io.EOF, and Recv gives the status.
		if err := stream.Send(&rpb.ServerReflectionRequest{MessageRequest: &rpb.ServerReflectionRequest_ListServices{}}); err != nil && !errors.Is(err, io.EOF) {
			return nil, err
		}
		resp, err := stream.Recv()
		if err != nil {
			return nil, err
		}
		var names []string
		for _, s := range resp.GetListServicesResponse().GetService() {
			names = append(names, s.GetName())
		}
		return names, nil
	}
	_, err = list("")
	wantCode(t, err, codes.Unauthenticated, "reflection without a token")
	names, err := list(svctest.Token)
	must(t, err)
	found := false
	for _, n := range names {
		found = found || n == "firetower.topicsvc.v1.TopicService"
	}
	if !found {
		t.Fatalf("reflection lists %v, want firetower.topicsvc.v1.TopicService", names)
	}
}
