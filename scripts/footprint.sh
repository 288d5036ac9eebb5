#!/usr/bin/env bash
# footprint.sh measures what firetower adds to a gin app. In a temporary
# directory it builds the README's quick start program (a gin app with
# r.Use(firetower.Middleware(...)), against the firetower of this
# checkout) and the same app without firetower (gin with one route), both
# with go build -trimpath and the same module versions, and prints a
# markdown table: binary size (MB, 10^6 bytes) and the number of packages
# outside the standard library each links, and the difference.
#
#   bash scripts/footprint.sh          # the table
#   bash scripts/footprint.sh --list   # and the packages firetower adds
#
# Needs Go and the module cache or proxy; it changes nothing here.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)

list=
case "${1:-}" in
"") ;;
--list) list=1 ;;
*)
	echo "usage: $0 [--list]" >&2
	exit 2
	;;
esac

tmp=$(mktemp -d /tmp/firetower-footprint.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
# Only the two programs' own go.mod counts: no workspace, no vendoring.
export GOWORK=off GOFLAGS=-mod=mod

# The README's quick start: the first go block under "## Quick start".
mkdir -p "$tmp/with" "$tmp/without"
awk '/^## / { q = ($0 == "## Quick start") } q && /^```go$/ { c = 1; next } c && /^```$/ { exit } c { print }' README.md >"$tmp/with/main.go"
if ! grep -q 'firetower.Middleware' "$tmp/with/main.go"; then
	echo "footprint: README.md's quick start has no go program using firetower.Middleware" >&2
	exit 1
fi
cat >"$tmp/with/go.mod" <<EOF
module footprint/with

go $(go list -m -f '{{.GoVersion}}')

require github.com/OSMeteor/firetower v0.0.0

replace github.com/OSMeteor/firetower => $repo
EOF
(cd "$tmp/with" && go mod tidy)

# The same app without firetower: the same go.mod and go.sum, so that gin
# and everything else it links are of the same versions.
cat >"$tmp/without/main.go" <<'EOF'
package main

import "github.com/gin-gonic/gin"

func main() {
	r := gin.Default()
	r.GET("/", func(c *gin.Context) { c.String(200, "ok") })
	r.Run(":9999")
}
EOF
sed 's|^module footprint/with$|module footprint/without|' "$tmp/with/go.mod" >"$tmp/without/go.mod"
cp "$tmp/with/go.sum" "$tmp/without/go.sum"

# measure DIR builds DIR's program and prints its size in bytes and the
# packages outside the standard library it links (itself not counted),
# one per line, into DIR/size and DIR/packages.
measure() {
	local dir=$1 self
	(
		cd "$dir"
		go build -trimpath -o app .
		stat -c %s app >size
		self=$(go list -f '{{.ImportPath}}' .)
		go list -deps -f '{{if not .Standard}}{{.ImportPath}}{{end}}' . | grep -vx -e '' -e "$self" | sort >packages
	)
}
measure "$tmp/with"
measure "$tmp/without"

mb() { awk -v b="$1" 'BEGIN { printf "%.1f", b / 1e6 }'; }
signed() { awk -v d="$1" 'BEGIN { printf "%+.1f", d }'; }
with_size=$(cat "$tmp/with/size")
without_size=$(cat "$tmp/without/size")
with_pkgs=$(wc -l <"$tmp/with/packages")
without_pkgs=$(wc -l <"$tmp/without/packages")

echo "firetower $(git describe --always --dirty 2>/dev/null || echo '(no git)'), gin $(cd "$tmp/with" && go list -m -f '{{.Version}}' github.com/gin-gonic/gin), $(go env GOVERSION) $(go env GOOS)/$(go env GOARCH), go build -trimpath"
echo
echo "| program | binary (MB) | non-standard packages |"
echo "|---|---:|---:|"
echo "| gin, one route | $(mb "$without_size") | $without_pkgs |"
echo "| gin + firetower (README quick start) | $(mb "$with_size") | $with_pkgs |"
echo "| firetower adds | $(signed "$(mb "$((with_size - without_size))")") | $(printf '%+d' $((with_pkgs - without_pkgs))) |"

if [ -n "$list" ]; then
	echo
	echo "packages firetower adds:"
	comm -13 "$tmp/without/packages" "$tmp/with/packages" | sed 's/^/  /'
fi
