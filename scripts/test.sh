#!/usr/bin/env bash
# test.sh runs every firetower test: static checks, the Go tests with the
# race detector (Redis broker included, against a standalone Redis and a
# Redis Cluster it starts on free loopback ports), bounded fuzz runs of
# the parsers (client frames, REST publish bodies, topic service
# batches), the JS client's unit tests and the browser end-to-end tests in
# headless Chromium.
#
# Needs Go, git, a C compiler (the race detector needs cgo), redis-server
# and redis-cli 7+, node 20+ and npm, and Chromium (chromium or
# chromium-browser on the PATH, or /usr/bin/chromium; FIRETOWER_CHROMIUM
# names another). They are checked first: run as root on Debian, the
# script installs what is missing with apt-get; otherwise it stops at once
# and says which command installs it. Every test runs: none is skipped for
# want of a server or a browser.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }
fail() {
	printf 'test.sh: %s\n' "$*" >&2
	exit 1
}

# major prints the first number of a version string such as "v20.1.0" or
# "Redis server v=7.0.15 sha=...", after the given prefix.
major() { sed -n "s/.*$1\([0-9][0-9]*\).*/\1/p" | head -n 1; }

# find_chromium prints the browser the e2e tests are to use.
find_chromium() {
	if [ -n "${FIRETOWER_CHROMIUM:-}" ]; then
		[ -x "$FIRETOWER_CHROMIUM" ] && echo "$FIRETOWER_CHROMIUM"
		return
	fi
	command -v chromium || command -v chromium-browser || { [ -x /usr/bin/chromium ] && echo /usr/bin/chromium; }
}

# check_needs fills missing (what is needed, and what was found) and
# packages (the Debian packages that provide it).
check_needs() {
	missing=() packages=()
	local v cc
	command -v git >/dev/null || { missing+=("git"); packages+=(git); }
	cc=$(go env CC)
	command -v "${cc%% *}" >/dev/null || { missing+=("a C compiler ($cc) for go test -race"); packages+=(gcc libc6-dev); }
	if command -v redis-server >/dev/null && command -v redis-cli >/dev/null; then
		v=$(redis-server --version | major 'v=')
		[ "${v:-0}" -ge 7 ] || { missing+=("redis-server 7 or later (found: $(redis-server --version))"); packages+=(redis-server); }
	else
		missing+=("redis-server and redis-cli"); packages+=(redis-server)
	fi
	if command -v node >/dev/null; then
		v=$(node --version | major 'v')
		[ "${v:-0}" -ge 20 ] || { missing+=("node 20 or later (found: $(node --version))"); packages+=(nodejs); }
	else
		missing+=("node"); packages+=(nodejs)
	fi
	command -v npm >/dev/null || { missing+=("npm"); packages+=(npm); }
	if [ -z "$(find_chromium)" ]; then
		if [ -n "${FIRETOWER_CHROMIUM:-}" ]; then
			fail "FIRETOWER_CHROMIUM=$FIRETOWER_CHROMIUM is not an executable"
		fi
		missing+=("Chromium (chromium or chromium-browser on the PATH, or /usr/bin/chromium)"); packages+=(chromium)
	fi
}

step "checking what the tests need"
command -v go >/dev/null || fail "go is not on the PATH: install Go $(sed -n 's/^go //p' go.mod) or later from https://go.dev/dl/ (Debian's golang package is older)"
check_needs
if [ ${#missing[@]} -gt 0 ]; then
	if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
		echo "missing:"
		printf '  %s\n' "${missing[@]}"
		echo "installing: apt-get install -y ${packages[*]}"
		export DEBIAN_FRONTEND=noninteractive
		apt-get update -qq || fail "apt-get update failed"
		apt-get install -y -qq "${packages[@]}" || fail "apt-get install -y ${packages[*]} failed"
		check_needs
		if [ ${#missing[@]} -gt 0 ]; then
			echo "test.sh: still missing after apt-get install -y ${packages[*]}:" >&2
			printf '  %s\n' "${missing[@]}" >&2
			case "${missing[*]}" in
			# Debian 12's nodejs is 18; playwright-core needs 20.
			*node*) fail "install node 20 or later by other means (https://nodejs.org/en/download; Debian 13's nodejs is 20)" ;;
			*) fail "install them by other means" ;;
			esac
		fi
	else
		echo "test.sh: missing:" >&2
		printf '  %s\n' "${missing[@]}" >&2
		case "${missing[*]}" in
		*node*) echo "test.sh: node must be 20 or later; Debian 12's nodejs is 18 (https://nodejs.org/en/download)" >&2 ;;
		esac
		sudo=sudo
		[ "$(id -u)" = 0 ] && sudo=
		fail "install with: ${sudo:+$sudo }apt-get install -y ${packages[*]}"
	fi
fi
[ "$(go env CGO_ENABLED)" = 1 ] || fail "go test -race needs cgo, and CGO_ENABLED is 0"
FIRETOWER_CHROMIUM=$(find_chromium)
export FIRETOWER_CHROMIUM
echo "go $(go env GOVERSION), $(redis-server --version | cut -d' ' -f1-3), node $(node --version), npm $(npm --version), $FIRETOWER_CHROMIUM"

step "gofmt and go vet"
unformatted=$(gofmt -l $(git ls-files '*.go'))
if [ -n "$unformatted" ]; then
	echo "gofmt would change: $unformatted" >&2
	exit 1
fi
go vet ./... ./_examples/chat   # ./... skips directories starting with _
go vet -tags redis ./... ./_examples/chat
(cd bench && go vet ./...)

step "import graph: no gRPC, protobuf or Prometheus client under the root package and topicsvc"
# An app that imports firetower links what these two import; the gRPC
# service and client and the Prometheus metrics live in packages of their
# own, which only the apps that want them import (STYLE.md). gin itself
# links google.golang.org/protobuf/proto (its binding and render import
# it), so for a package that links gin what any gin app links is not
# counted.
heavy='^(google[.]golang[.]org/(grpc|protobuf)|github[.]com/prometheus)(/|$)'
gin_deps=$(go list -deps github.com/gin-gonic/gin)
graph_ok=1
for pkg in . ./topicsvc; do
	deps=$(go list -deps "$pkg")
	allowed=
	grep -qx github.com/gin-gonic/gin <<<"$deps" && allowed=$gin_deps
	bad=$(grep -E "$heavy" <<<"$deps" | grep -vxF -f <(echo "$allowed") || true)
	[ -n "$bad" ] || continue
	graph_ok=
	echo "$(go list "$pkg") links $(wc -l <<<"$bad") packages of gRPC, protobuf or the Prometheus client${allowed:+ beyond those gin links}, brought in by:" >&2
	# The imports that bring them in: a package outside the set that
	# imports one inside it.
	go list -deps -f '{{.ImportPath}}{{range .Imports}} {{.}}{{end}}' "$pkg" |
		awk 'NR == FNR { bad[$1] = 1; next } !($1 in bad) { for (i = 2; i <= NF; i++) if ($i in bad) print "  " $1 " imports " $i }' <(echo "$bad") - >&2
	echo "  all of them:" >&2
	sed 's/^/    /' <<<"$bad" >&2
done
[ -n "$graph_ok" ] || fail "the root package or topicsvc links gRPC, protobuf or the Prometheus client (see above)"

step "starting Redis (standalone and a 3-master cluster)"
redis_dir=$(mktemp -d /tmp/firetower-redis.XXXXXX)
trap 'scripts/redis-up.sh --stop "$redis_dir" >/dev/null 2>&1 || true; rm -rf "$redis_dir"' EXIT
# Not eval "$(...)": eval would hide redis-up.sh's failure from set -e.
redis_env=$(scripts/redis-up.sh "$redis_dir") || fail "scripts/redis-up.sh failed (its error is above)"
eval "$redis_env"

step "go test -race -tags redis ./..."
go test -race -tags redis -count=1 -timeout 20m ./...
go test -race -count=1 -timeout 5m ./_examples/chat   # ./... skips directories starting with _

step "fuzzing the parsers (bounded)"
# Each target runs a count of inputs, about 30 s (10 s for the small ones)
# on a 2-core machine: a wall-clock -fuzztime can fail a run with "context
# deadline exceeded" when the fuzzing ends with a worker mid-input (a race
# in Go's fuzzing coordinator, golang/go#75804), which a count cannot.
# FUZZTIME (a count, 100000x, or a duration) replaces every count.
# Minimizing a new interesting input shows as 0 execs/sec and by default may
# take a minute of the run; 2 s each leaves the time to fuzzing.
fuzz() { # target, package, default count
  go test -run '^$' -fuzz "^$1\$" -fuzztime "${FUZZTIME:-$3}" -fuzzminimizetime 2s "$2"
}
fuzz FuzzParseFrame . 50000x
fuzz FuzzRESTPublish . 50000x
fuzz FuzzPresenceEvent . 40000x
fuzz FuzzParse ./internal/publishbody 1500000x
# The smaller codecs. (FuzzHeader's input, one length, is covered by its
# seeds and a boundary sweep in go test.)
fuzz FuzzAppend ./internal/jsonstr 250000x
fuzz FuzzBucket ./internal/ratelimit 700000x
fuzz FuzzReadBatch ./topicsvc/internal/wire 100000x

# A test that hangs fails with its name (--test-timeout, per test); a test
# file whose process outlives its tests ends the step (timeout), instead of
# the run waiting forever.
step "firetower.js unit tests (node --test)"
timeout 5m node --test --test-timeout=60000 js/

step "browser end-to-end tests (headless Chromium)"
(cd e2e && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund && timeout 30m npm test -- --test-timeout=180000)

step "all tests passed"
