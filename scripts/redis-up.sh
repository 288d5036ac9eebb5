#!/usr/bin/env bash
# redis-up.sh starts the Redis servers the firetower Redis broker tests need:
# one standalone Redis and a Redis Cluster of three masters, all on free
# loopback ports, daemonized, with their files under DIR. It prints the
# environment the tests read, for eval:
#
#   eval "$(scripts/redis-up.sh /tmp/ft-redis)"
#   go test -race -tags redis ./...
#   scripts/redis-up.sh --stop /tmp/ft-redis
#
# Everything but the export lines goes to stderr. Needs redis-server and
# redis-cli (Debian package redis-server), version 7 or later (sharded pub/sub).
set -euo pipefail

usage() {
	echo "usage: $0 DIR | $0 --stop DIR" >&2
	exit 2
}

stop() {
	local dir=$1 pidfile pid
	shopt -s nullglob
	for pidfile in "$dir"/*/redis.pid; do
		pid=$(cat "$pidfile" 2>/dev/null || true)
		[ -n "$pid" ] || continue
		kill "$pid" 2>/dev/null || true
		for _ in $(seq 50); do
			kill -0 "$pid" 2>/dev/null || break
			sleep 0.1
		done
		kill -9 "$pid" 2>/dev/null || true
		rm -f "$pidfile"
	done
}

# port_free reports whether nothing listens on 127.0.0.1:$1.
port_free() {
	! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# free_port prints a free port between 20000 and 54999 that this script has
# not handed out before. The ports handed out are kept in a file because
# free_port runs in command substitutions, whose variables do not survive.
free_port() {
	local p
	for _ in $(seq 200); do
		p=$((20000 + RANDOM % 35000))
		grep -qx "$p" "$dir/ports" 2>/dev/null && continue
		if port_free "$p"; then
			echo "$p" >>"$dir/ports"
			echo "$p"
			return 0
		fi
	done
	echo "redis-up: no free port found" >&2
	return 1
}

# start NAME EXTRA_CONFIG... starts one daemonized redis-server in $dir/NAME
# on a free port and prints the port. It retries with another port if the
# chosen one was taken meanwhile.
start() {
	local name=$1 port d
	shift
	d="$dir/$name"
	mkdir -p "$d"
	for _ in 1 2 3 4 5; do
		port=$(free_port)
		{
			echo "port $port"
			echo "bind 127.0.0.1"
			echo "daemonize yes"
			echo "pidfile $d/redis.pid"
			echo "logfile $d/redis.log"
			echo "dir $d"
			echo 'save ""'
			echo "appendonly no"
			for line in "$@"; do
				case "$line" in
				*@PORT@*) echo "${line//@PORT@/$(free_port)}" ;;
				*) echo "$line" ;;
				esac
			done
		} >"$d/redis.conf"
		rm -f "$d/nodes.conf"
		if redis-server "$d/redis.conf" >&2; then
			for _ in $(seq 50); do
				if redis-cli -p "$port" ping >/dev/null 2>&1; then
					echo "$port"
					return 0
				fi
				sleep 0.1
			done
		fi
		echo "redis-up: $name did not start on port $port, retrying; log:" >&2
		[ -f "$d/redis.log" ] && tail -n 5 "$d/redis.log" >&2 || true
		[ -f "$d/redis.pid" ] && kill "$(cat "$d/redis.pid")" 2>/dev/null || true
	done
	echo "redis-up: could not start $name" >&2
	return 1
}

[ $# -ge 1 ] || usage
if [ "$1" = "--stop" ]; then
	[ $# -eq 2 ] || usage
	stop "$2"
	exit 0
fi
[ $# -eq 1 ] || usage
command -v redis-server >/dev/null && command -v redis-cli >/dev/null || {
	echo "redis-up: redis-server and redis-cli are needed (apt-get install redis-server)" >&2
	exit 1
}
mkdir -p "$1"
dir=$(cd "$1" && pwd)
stop "$dir" # a previous run's servers, if any
: >"$dir/ports"
trap 'stop "$dir"' ERR

standalone=$(start standalone)
cluster=()
for i in 1 2 3; do
	cluster+=("$(start "cluster-$i" "cluster-enabled yes" "cluster-config-file nodes.conf" "cluster-node-timeout 5000" "cluster-port @PORT@")")
done
addrs=()
for p in "${cluster[@]}"; do addrs+=("127.0.0.1:$p"); done
redis-cli --cluster create "${addrs[@]}" --cluster-replicas 0 --cluster-yes >&2
for p in "${cluster[@]}"; do
	ok=
	for _ in $(seq 100); do
		if redis-cli -p "$p" cluster info 2>/dev/null | grep -q '^cluster_state:ok'; then
			ok=1
			break
		fi
		sleep 0.1
	done
	[ -n "$ok" ] || { echo "redis-up: cluster node $p not ok" >&2; exit 1; }
done
trap - ERR
echo "export FIRETOWER_TEST_REDIS_ADDR=127.0.0.1:$standalone"
echo "export FIRETOWER_TEST_REDIS_CLUSTER_ADDRS=$(IFS=,; echo "${addrs[*]}")"
