#!/usr/bin/env bash
# test.sh runs every firetower test: static checks, the Go tests with the
# race detector (Redis broker included, against a standalone Redis and a
# Redis Cluster it starts on free loopback ports), bounded fuzz runs of
# the parsers (client frames, REST publish bodies, topic service
# batches), the JS client's unit tests and the browser end-to-end tests in
# headless Chromium.
#
# Needs: Go, redis-server and redis-cli (7+), node and npm, chromium.
# On Debian: apt-get install -y redis-server chromium nodejs npm
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

step "gofmt and go vet"
unformatted=$(gofmt -l $(git ls-files '*.go'))
if [ -n "$unformatted" ]; then
	echo "gofmt would change: $unformatted" >&2
	exit 1
fi
go vet ./... ./_examples/chat   # ./... skips directories starting with _
go vet -tags redis ./... ./_examples/chat
(cd bench && go vet ./...)

step "starting Redis (standalone and a 3-master cluster)"
redis_dir=$(mktemp -d /tmp/firetower-redis.XXXXXX)
trap 'scripts/redis-up.sh --stop "$redis_dir" >/dev/null 2>&1 || true; rm -rf "$redis_dir"' EXIT
eval "$(scripts/redis-up.sh "$redis_dir")"

step "go test -race -tags redis ./..."
go test -race -tags redis -count=1 -timeout 20m ./...

step "fuzzing the parsers (bounded)"
# Minimizing a new interesting input shows as 0 execs/sec and by default may
# take a minute of the run; 2 s each leaves the time to fuzzing.
go test -run '^$' -fuzz '^FuzzParseFrame$' -fuzztime "${FUZZTIME:-30s}" -fuzzminimizetime 2s .
go test -run '^$' -fuzz '^FuzzParsePublish$' -fuzztime "${FUZZTIME:-30s}" -fuzzminimizetime 2s .
go test -run '^$' -fuzz '^FuzzReadBatch$' -fuzztime "${FUZZTIME:-30s}" -fuzzminimizetime 2s ./topicsvc/internal/wire

step "firetower.js unit tests (node --test)"
node --test js/

step "browser end-to-end tests (headless Chromium)"
(cd e2e && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund && npm test)

step "all tests passed"
