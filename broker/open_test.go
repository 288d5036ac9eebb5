package broker

import (
	"strings"
	"testing"
)

// The broker package's own tests never link broker/redis, so the Redis
// schemes are unregistered here whatever the build tags: this is what a
// binary built without -tags redis sees.
func TestOpenRedisWithoutTagSaysHowToBuild(t *testing.T) {
	for _, u := range []string{
		"redis://127.0.0.1:6379/0",
		"rediss://user:secret@redis.example:6380/1",
		"redis+cluster://127.0.0.1:7000?addr=127.0.0.1:7001",
	} {
		b, err := Open(u, Options{})
		if err == nil {
			b.Close()
			t.Fatalf("Open(%q) succeeded without the Redis broker linked in", u)
		}
		if !strings.Contains(err.Error(), "build with -tags redis") {
			t.Errorf("Open(%q) = %v, want an error that says to build with -tags redis", u, err)
		}
	}
}

// Nor do they link topicsvc/client: this is what a program that did not
// import it sees.
func TestOpenTopicsvcWithoutClientSaysWhatToImport(t *testing.T) {
	for _, u := range []string{
		"topicsvc://127.0.0.1:6666",
		"topicsvcs://topicsvc.example:6666?ca=/etc/firetower/ca.pem",
	} {
		b, err := Open(u, Options{Token: "secret"})
		if err == nil {
			b.Close()
			t.Fatalf("Open(%q) succeeded without the topic service client linked in", u)
		}
		if want := `import _ "github.com/OSMeteor/firetower/topicsvc/client"`; !strings.Contains(err.Error(), want) {
			t.Errorf("Open(%q) = %v, want an error that says to add %s", u, err, want)
		}
	}
}

func TestOpenUnknownScheme(t *testing.T) {
	_, err := Open("nats://127.0.0.1:4222", Options{})
	if err == nil || !strings.Contains(err.Error(), `unknown scheme "nats"`) {
		t.Fatalf("Open(nats://...) = %v, want an unknown scheme error", err)
	}
}
