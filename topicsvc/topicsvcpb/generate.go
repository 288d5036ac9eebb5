// Package topicsvcpb is the protobuf contract of the firetower topic service
// (topicsvc.proto) and its generated Go code.
package topicsvcpb

//go:generate protoc --go_out=. --go_opt=paths=source_relative --go-grpc_out=. --go-grpc_opt=paths=source_relative topicsvc.proto
