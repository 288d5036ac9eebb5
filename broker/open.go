package broker

import (
	"fmt"
	"log/slog"
	"net/url"
	"sort"
	"strings"
	"sync"
)

// Options are the settings a broker URL cannot carry.
type Options struct {
	// Token is the shared secret between nodes and a topic service.
	Token string
	// Logger receives the broker's logs; nil discards them.
	Logger *slog.Logger
}

// Opener builds a Broker from a parsed URL.
type Opener func(u *url.URL, opts Options) (Broker, error)

var (
	openersMu sync.RWMutex
	openers   = map[string]Opener{}
)

// Register makes a broker available to Open under a URL scheme. It is
// called from the init function of the package that implements it, as
// database/sql drivers do. It panics if the scheme is registered twice.
func Register(scheme string, open Opener) {
	openersMu.Lock()
	defer openersMu.Unlock()
	if _, dup := openers[scheme]; dup {
		panic("firetower: broker scheme registered twice: " + scheme)
	}
	openers[scheme] = open
}

// Open returns the broker a URL names. The package implementing the
// scheme must be linked in; without it, Open says which import or build
// tag is missing.
//
// The topic service, with import _ "github.com/OSMeteor/firetower/topicsvc/client":
//
//	topicsvc://host:port                   plaintext gRPC
//	topicsvcs://host:port                  TLS, verified against the system roots
//	topicsvcs://host:port?ca=/path/ca.pem  TLS, verified against a private CA
//
// Redis, with import _ "github.com/OSMeteor/firetower/broker/redis" in a
// program built with -tags redis:
//
//	redis://[user:pass@]host:port/db                          one server
//	rediss://[user:pass@]host:port/db                         one server, TLS
//	redis+cluster://h1:p1?addr=h2:p2&addr=h3:p3               Redis Cluster
//	redis+sentinel://h1:p1?addr=h2:p2&master_name=NAME        Sentinel
//	rediss+cluster://..., rediss+sentinel://...               the same over TLS
//
// A Redis URL's query also takes go-redis's options and prefix=NAME, the
// namespace of the broker's keys and channels (default firetower).
func Open(rawURL string, opts Options) (Broker, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, fmt.Errorf("firetower: broker URL %q: %w", rawURL, err)
	}
	if u.Scheme == "" || u.Host == "" {
		return nil, fmt.Errorf("firetower: broker URL %q: want scheme://host:port", rawURL)
	}
	openersMu.RLock()
	open, ok := openers[u.Scheme]
	openersMu.RUnlock()
	if !ok {
		switch {
		case u.Scheme == "topicsvc" || u.Scheme == "topicsvcs":
			return nil, fmt.Errorf("firetower: broker URL %q: the topic service client is not linked in; add import _ %q", rawURL, topicsvcClient)
		case strings.HasPrefix(u.Scheme, "redis"):
			return nil, fmt.Errorf("firetower: broker URL %q: the Redis broker is not compiled in; build with -tags redis", rawURL)
		}
		return nil, fmt.Errorf("firetower: broker URL %q: unknown scheme %q (known: %s)", rawURL, u.Scheme, strings.Join(schemes(), ", "))
	}
	return open(u, opts)
}

// topicsvcClient is the package that registers the topicsvc schemes.
const topicsvcClient = "github.com/OSMeteor/firetower/topicsvc/client"

func schemes() []string {
	openersMu.RLock()
	defer openersMu.RUnlock()
	s := make([]string, 0, len(openers))
	for k := range openers {
		s = append(s, k)
	}
	sort.Strings(s)
	return s
}
