//go:build redis

package main

// Built with -tags redis, the demo also accepts FIRETOWER_BROKER=redis://...
// (and rediss://, redis+cluster://, redis+sentinel://).
import _ "github.com/OSMeteor/firetower/broker/redis"
