//go:build redis

package redis

import (
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/OSMeteor/firetower/broker"
	goredis "github.com/redis/go-redis/v9"
)

func init() {
	for _, tls := range []string{"redis", "rediss"} {
		broker.Register(tls, open)
		broker.Register(tls+"+cluster", open)
		broker.Register(tls+"+sentinel", open)
	}
}

// Timeouts of the clients opened from a URL that does not set them: short,
// so that an outage turns into ErrUnavailable quickly. Dial attempts are cut
// to one for the same reason (see orOne), and command retries are off (see
// noRetries).
const (
	urlDialTimeout = time.Second
	urlIOTimeout   = 2 * time.Second
)

// open builds a broker from a URL; see the package documentation for the
// forms.
func open(u *url.URL, opts broker.Options) (broker.Broker, error) {
	base, kind, _ := strings.Cut(u.Scheme, "+")
	q := u.Query()
	o := Options{Prefix: q.Get("prefix"), Logger: opts.Logger}
	q.Del("prefix")
	// go-redis rejects query parameters it does not know.
	v := *u
	v.Scheme = base
	v.RawQuery = q.Encode()
	raw := v.String()

	var client goredis.UniversalClient
	switch kind {
	case "":
		co, err := goredis.ParseURL(raw)
		if err != nil {
			return nil, fmt.Errorf("firetower: redis broker URL: %w", err)
		}
		urlDefaults(&co.DialTimeout, &co.ReadTimeout, &co.WriteTimeout, &co.DialerRetries, &co.MaxRetries)
		co.ContextTimeoutEnabled = true
		client = goredis.NewClient(co)
	case "cluster":
		co, err := goredis.ParseClusterURL(raw)
		if err != nil {
			return nil, fmt.Errorf("firetower: redis broker URL: %w", err)
		}
		urlDefaults(&co.DialTimeout, &co.ReadTimeout, &co.WriteTimeout, &co.DialerRetries, &co.MaxRetries)
		co.ContextTimeoutEnabled = true
		client = goredis.NewClusterClient(co)
	case "sentinel":
		co, err := goredis.ParseFailoverURL(raw)
		if err != nil {
			return nil, fmt.Errorf("firetower: redis broker URL: %w", err)
		}
		urlDefaults(&co.DialTimeout, &co.ReadTimeout, &co.WriteTimeout, &co.DialerRetries, &co.MaxRetries)
		co.ContextTimeoutEnabled = true
		client = goredis.NewFailoverClient(co)
	default:
		return nil, fmt.Errorf("firetower: redis broker URL: unknown scheme %q", u.Scheme)
	}
	b, err := New(client, o)
	if err != nil {
		client.Close()
		return nil, err
	}
	b.ownsClient = true
	return b, nil
}

// orOne makes go-redis dial once, not its default of five times with
// backoff: a refused connection should fail the caller within
// milliseconds.
// urlDefaults fills in what a URL left unset, for the three kinds of
// go-redis options (which share these fields but no type).
func urlDefaults(dial, read, write *time.Duration, dialerRetries, maxRetries *int) {
	*dial = orDefault(*dial, urlDialTimeout)
	*read = orDefault(*read, urlIOTimeout)
	*write = orDefault(*write, urlIOTimeout)
	*dialerRetries = orOne(*dialerRetries)
	*maxRetries = noRetries(*maxRetries)
}

func orOne(n int) int {
	if n == 0 {
		return 1
	}
	return n
}

// noRetries turns go-redis's command retries off unless the URL asks for
// them: a pipeline of publishes retried after its connection died may
// publish twice, and delivery is at most once. The pool checks idle
// connections before use, so a restart of Redis costs no failed command.
func noRetries(n int) int {
	if n == 0 {
		return -1
	}
	return n
}

func orDefault(d, def time.Duration) time.Duration {
	if d == 0 {
		return def
	}
	return d
}
