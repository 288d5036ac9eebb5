//go:build redis

package main

// The Redis broker registers redis:// only when linked in: build the harness
// with -tags redis for the cluster scenario's Redis row.
import _ "github.com/OSMeteor/firetower/broker/redis"
