#!/bin/sh
# Runs one firetower topic service and N chat nodes (default 2) on
# 127.0.0.1, until Ctrl-C. Run from anywhere inside the repository.
set -eu
nodes=${1:-2}
root=$(cd "$(dirname "$0")/../.." && pwd)
bin=$(mktemp -d)
pids=""
cleanup() {
	for p in $pids; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	rm -rf "$bin"
}
trap cleanup EXIT INT TERM

cd "$root"
go build -o "$bin/firetower-topicsvc" ./cmd/firetower-topicsvc
go build -o "$bin/chat" ./_examples/chat

export FIRETOWER_TOPICSVC_TOKEN=${FIRETOWER_TOPICSVC_TOKEN:-cluster-demo-$(date +%s)}
export FIRETOWER_API_TOKEN=${FIRETOWER_API_TOKEN:-api-secret}
svc=${FIRETOWER_TOPICSVC_LISTEN:-127.0.0.1:6666}

"$bin/firetower-topicsvc" -listen "$svc" &
pids="$pids $!"
sleep 0.5

i=1
while [ "$i" -le "$nodes" ]; do
	FIRETOWER_ADDR=127.0.0.1:$((9000 + i)) FIRETOWER_BROKER=topicsvc://$svc "$bin/chat" &
	pids="$pids $!"
	echo "chat node $i: http://127.0.0.1:$((9000 + i))/"
	i=$((i + 1))
done
echo "topic service on $svc; REST token $FIRETOWER_API_TOKEN; Ctrl-C stops everything"
wait
