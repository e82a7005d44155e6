#!/usr/bin/env bash
# Proves that every service of scripts/services.sh answers, using nothing but the exported
# TOKEN_STORE_TEST_* variables (so it checks the exports as much as the services):
#
#   eval "$(scripts/services.sh start)" && scripts/smoke.sh [--restart]
#
# --restart also kills and restarts the AOF Redis, the plain OpenBao and the crash PostgreSQL through
# their restart scripts. Off by default: it disturbs tests that may be running against the same
# services.
# Ends with `N passed, M failed` on a line of its own; exits non-zero on any failure.
set -uo pipefail # no -e: a failed check is counted and reported, the others still run

WITH_RESTART=
[[ ${1:-} == --restart ]] && WITH_RESTART=1

passed=0 failed=0
# check NAME FUNCTION [ARGS...]: each check runs in a fresh copy of this script under its own time
# limit (timeout cannot run a shell function), so a hung client cannot hang CI.
check() {
	local name=$1 out
	shift
	if out=$(timeout 60 "$BASH" "${BASH_SOURCE[0]}" __check "$@" 2>&1); then
		passed=$((passed + 1))
		printf 'ok    %s\n' "$name"
	else
		failed=$((failed + 1))
		printf 'FAIL  %s\n' "$name"
		[[ -n $out ]] && printf '%s\n' "$out" | tail -n 8 | sed 's/^/      /'
	fi
	return 0
}

need() { # need VAR...: a missing export is a failure, not a skip: start is meant to set them all
	local v
	for v in "$@"; do
		[[ -n ${!v:-} ]] || {
			echo "$v is not set (eval \"\$(scripts/services.sh start)\" first)"
			return 1
		}
	done
}

# redis://host:port/ or rediss://host:port/ -> "host port"
hostport() {
	local u=${1#*://}
	u=${u%%/*}
	u=${u##*@}
	echo "${u%:*} ${u##*:}"
}

expect() { # expect WANT CMD...: CMD's output must equal WANT
	local want=$1 got
	shift
	got=$("$@" 2>&1) || {
		echo "failed: $* -> $got"
		return 1
	}
	[[ $got == "$want" ]] || {
		echo "expected '$want', got '$got' from: $*"
		return 1
	}
}

json() { # json EXPR < body: print a value from a JSON document, e.g. json '["auth"]["client_token"]'
	python3 -c '
import json, sys
try:
    v = eval("json.load(sys.stdin)" + sys.argv[1])
except Exception as e:
    sys.exit("json%s: %r" % (sys.argv[1], e))
print(v if isinstance(v, str) else json.dumps(v))' "$1"
}

export SMOKE_KEY=${SMOKE_KEY:-token-store-smoke-$$-$RANDOM} # one key name for all the checks
KEY=$SMOKE_KEY

# ---------------------------------------------------------------- Redis

redis_plain() { # redis_plain VAR: PING and a set/get round trip
	need "$1" || return 1
	local h p
	read -r h p <<<"$(hostport "${!1}")"
	expect PONG redis-cli -h "$h" -p "$p" ping || return 1
	expect OK redis-cli -h "$h" -p "$p" set "$KEY" v1 px 60000 || return 1
	expect v1 redis-cli -h "$h" -p "$p" get "$KEY" || return 1
	redis-cli -h "$h" -p "$p" del "$KEY" >/dev/null
}

redis_aof_config() {
	need TOKEN_STORE_TEST_REDIS_AOF_URL TOKEN_STORE_TEST_REDIS_AOF_PIDFILE TOKEN_STORE_TEST_REDIS_AOF_RESTART || return 1
	local h p
	read -r h p <<<"$(hostport "$TOKEN_STORE_TEST_REDIS_AOF_URL")"
	expect $'appendonly\nyes' redis-cli -h "$h" -p "$p" config get appendonly || return 1
	expect $'appendfsync\nalways' redis-cli -h "$h" -p "$p" config get appendfsync || return 1
	[[ -x $TOKEN_STORE_TEST_REDIS_AOF_RESTART ]] || {
		echo "restart script $TOKEN_STORE_TEST_REDIS_AOF_RESTART is not executable"
		return 1
	}
	kill -0 "$(cat "$TOKEN_STORE_TEST_REDIS_AOF_PIDFILE")" || return 1
}

# A write acknowledged before SIGKILL must be there after the restart script ran.
redis_aof_crash() {
	need TOKEN_STORE_TEST_REDIS_AOF_URL TOKEN_STORE_TEST_REDIS_AOF_PIDFILE TOKEN_STORE_TEST_REDIS_AOF_RESTART || return 1
	local h p pid
	read -r h p <<<"$(hostport "$TOKEN_STORE_TEST_REDIS_AOF_URL")"
	expect OK redis-cli -h "$h" -p "$p" set "$KEY" durable || return 1
	pid=$(cat "$TOKEN_STORE_TEST_REDIS_AOF_PIDFILE")
	kill -9 "$pid"
	while kill -0 "$pid" 2>/dev/null && ! grep -q '^State:.*Z' "/proc/$pid/status" 2>/dev/null; do sleep 0.05; done
	redis-cli -h "$h" -p "$p" ping >/dev/null 2>&1 && {
		echo "still answering after kill -9"
		return 1
	}
	"$TOKEN_STORE_TEST_REDIS_AOF_RESTART" || return 1
	[[ $(cat "$TOKEN_STORE_TEST_REDIS_AOF_PIDFILE") != "$pid" ]] || {
		echo "pid file not updated"
		return 1
	}
	expect durable redis-cli -h "$h" -p "$p" get "$KEY" || return 1
	redis-cli -h "$h" -p "$p" del "$KEY" >/dev/null
}

redis_cluster() {
	need TOKEN_STORE_TEST_REDIS_CLUSTER_URLS TOKEN_STORE_TEST_REDIS_CLUSTER_URL || return 1
	local urls u h p n=0 info slaves=0
	IFS=, read -ra urls <<<"$TOKEN_STORE_TEST_REDIS_CLUSTER_URLS"
	((${#urls[@]} == 6)) || {
		echo "expected 6 seed URLs, got ${#urls[@]}"
		return 1
	}
	for u in "${urls[@]}"; do
		read -r h p <<<"$(hostport "$u")"
		info=$(redis-cli -h "$h" -p "$p" cluster info) || return 1
		[[ $info == *cluster_state:ok* && $info == *cluster_known_nodes:6* ]] || {
			echo "$u: $info"
			return 1
		}
		[[ $(redis-cli -h "$h" -p "$p" info replication) == *master_link_status:up* ]] && slaves=$((slaves + 1))
		n=$((n + 1))
	done
	((slaves == 3)) || {
		echo "expected 3 linked replicas, found $slaves"
		return 1
	}
	# The redis+cluster:// form names three of the same nodes.
	local seeds=${TOKEN_STORE_TEST_REDIS_CLUSTER_URL#redis+cluster://}
	seeds=${seeds%/}
	IFS=, read -ra urls <<<"$seeds"
	((${#urls[@]} == 3)) || return 1
	read -r h p <<<"$(hostport "redis://${urls[0]}/")"
	# -c follows MOVED: keys spread over all three masters.
	local k
	for k in a b c d e f; do
		expect OK redis-cli -c -h "$h" -p "$p" set "$KEY:$k" "$k" px 60000 || return 1
		expect "$k" redis-cli -c -h "$h" -p "$p" get "$KEY:$k" || return 1
		redis-cli -c -h "$h" -p "$p" del "$KEY:$k" >/dev/null
	done
}

redis_tls() {
	need TOKEN_STORE_TEST_REDIS_TLS_URL TOKEN_STORE_TEST_TLS_CA || return 1
	[[ $TOKEN_STORE_TEST_REDIS_TLS_URL == rediss://* ]] || return 1
	local h p
	read -r h p <<<"$(hostport "$TOKEN_STORE_TEST_REDIS_TLS_URL")"
	expect PONG redis-cli --tls --cacert "$TOKEN_STORE_TEST_TLS_CA" -h "$h" -p "$p" ping || return 1
	# The port is TLS only: a plaintext client must not get an answer.
	if [[ $(redis-cli -h "$h" -p "$p" ping 2>&1) == PONG ]]; then
		echo "plaintext PING answered on the TLS port"
		return 1
	fi
}

redis_mtls() {
	need TOKEN_STORE_TEST_REDIS_MTLS_URL TOKEN_STORE_TEST_TLS_CA TOKEN_STORE_TEST_TLS_CLIENT_CERT \
		TOKEN_STORE_TEST_TLS_CLIENT_KEY || return 1
	local h p
	read -r h p <<<"$(hostport "$TOKEN_STORE_TEST_REDIS_MTLS_URL")"
	expect PONG redis-cli --tls --cacert "$TOKEN_STORE_TEST_TLS_CA" --cert "$TOKEN_STORE_TEST_TLS_CLIENT_CERT" \
		--key "$TOKEN_STORE_TEST_TLS_CLIENT_KEY" -h "$h" -p "$p" ping || return 1
	if [[ $(redis-cli --tls --cacert "$TOKEN_STORE_TEST_TLS_CA" -h "$h" -p "$p" ping 2>&1) == PONG ]]; then
		echo "mutual TLS port answered a client without certificate"
		return 1
	fi
}

# The TLS cluster: every node TLS only, cluster_state:ok, 3 linked replicas, and keys spread over
# the masters through -c (MOVED redirects name TLS ports too).
redis_tls_cluster() {
	need TOKEN_STORE_TEST_REDIS_TLS_CLUSTER_URL TOKEN_STORE_TEST_TLS_CA || return 1
	local seeds=${TOKEN_STORE_TEST_REDIS_TLS_CLUSTER_URL#rediss+cluster://} urls u h p info k
	local tls=(--tls --cacert "$TOKEN_STORE_TEST_TLS_CA")
	[[ $seeds != "$TOKEN_STORE_TEST_REDIS_TLS_CLUSTER_URL" ]] || {
		echo "not a rediss+cluster:// URL: $TOKEN_STORE_TEST_REDIS_TLS_CLUSTER_URL"
		return 1
	}
	seeds=${seeds%/}
	IFS=, read -ra urls <<<"$seeds"
	((${#urls[@]} == 3)) || return 1
	for u in "${urls[@]}"; do
		read -r h p <<<"$(hostport "rediss://$u/")"
		info=$(redis-cli "${tls[@]}" -h "$h" -p "$p" cluster info) || return 1
		[[ $info == *cluster_state:ok* && $info == *cluster_known_nodes:6* ]] || {
			echo "$u: $info"
			return 1
		}
		if [[ $(redis-cli -h "$h" -p "$p" ping 2>&1) == PONG ]]; then
			echo "$u answered a plaintext PING"
			return 1
		fi
	done
	read -r h p <<<"$(hostport "rediss://${urls[0]}/")"
	for k in a b c d e f; do
		expect OK redis-cli "${tls[@]}" -c -h "$h" -p "$p" set "$KEY:$k" "$k" px 60000 || return 1
		expect "$k" redis-cli "${tls[@]}" -c -h "$h" -p "$p" get "$KEY:$k" || return 1
		redis-cli "${tls[@]}" -c -h "$h" -p "$p" del "$KEY:$k" >/dev/null
	done
}

# sentinel VAR [TLS_ARGS...]: the first sentinel reports a quorum of 3 on mymaster, and the master
# it names takes a set/get.
sentinel() {
	local var=$1 seeds first h p out master
	shift
	need "$var" || return 1
	seeds=${!var#*://}
	first=${seeds%%[,/]*}
	read -r h p <<<"$(hostport "redis://$first/")"
	out=$(redis-cli "$@" -h "$h" -p "$p" sentinel ckquorum mymaster 2>&1) || return 1
	[[ $out == *"OK 3 usable"* ]] || {
		echo "ckquorum: $out"
		return 1
	}
	master=$(redis-cli "$@" -h "$h" -p "$p" sentinel get-master-addr-by-name mymaster | tr '\n' ' ') || return 1
	read -r h p <<<"$master"
	expect OK redis-cli "$@" -h "$h" -p "$p" set "$KEY" v1 px 60000 || return 1
	expect v1 redis-cli "$@" -h "$h" -p "$p" get "$KEY" || return 1
	redis-cli "$@" -h "$h" -p "$p" del "$KEY" >/dev/null
}

redis_tls_sentinel() {
	need TOKEN_STORE_TEST_REDIS_TLS_SENTINEL_URL TOKEN_STORE_TEST_TLS_CA || return 1
	[[ $TOKEN_STORE_TEST_REDIS_TLS_SENTINEL_URL == rediss+sentinel://* ]] || return 1
	sentinel TOKEN_STORE_TEST_REDIS_TLS_SENTINEL_URL --tls --cacert "$TOKEN_STORE_TEST_TLS_CA"
}

# ---------------------------------------------------------------- OpenBao

# vault HTTP_CODE_WANTED METHOD ADDR PATH TOKEN [BODY] [CURL_ARGS...] -> body on stdout
vault() {
	local want=$1 method=$2 addr=$3 path=$4 token=$5 body=${6:-} out code args=()
	shift 6 2>/dev/null || shift $#
	[[ -n $token ]] && args+=(-H "X-Vault-Token: $token")
	[[ -n $body ]] && args+=(--data "$body")
	out=$(curl -sS -w '\n%{http_code}' -X "$method" "${args[@]}" "$@" "$addr/v1/$path") || return 1
	code=${out##*$'\n'}
	out=${out%$'\n'*}
	[[ $code == "$want" ]] || {
		echo "$method $path: expected HTTP $want, got $code: $out" >&2
		return 1
	}
	printf '%s\n' "$out"
}

approle_login() { # approle_login ROLE_ID SECRET_ID -> client token
	local out
	out=$(vault 200 POST "$TOKEN_STORE_TEST_VAULT_ADDR" auth/approle/login "" \
		"{\"role_id\":\"$1\",\"secret_id\":\"$2\"}") || return 1
	json '["auth"]["client_token"]' <<<"$out"
}

vault_approle_kv() {
	need TOKEN_STORE_TEST_VAULT_ADDR TOKEN_STORE_TEST_VAULT_ROLE_ID TOKEN_STORE_TEST_VAULT_SECRET_ID \
		TOKEN_STORE_TEST_VAULT_APPROLE_PREFIX || return 1
	local a=$TOKEN_STORE_TEST_VAULT_ADDR pre=$TOKEN_STORE_TEST_VAULT_APPROLE_PREFIX mount=${TOKEN_STORE_TEST_VAULT_KV_MOUNT:-secret} tok got
	tok=$(approle_login "$TOKEN_STORE_TEST_VAULT_ROLE_ID" "$TOKEN_STORE_TEST_VAULT_SECRET_ID") || return 1
	[[ -n $tok ]] || return 1
	vault 200 POST "$a" "$mount/data/$pre/$KEY" "$tok" '{"data":{"token":"abc","exp":123}}' >/dev/null || return 1
	got=$(vault 200 GET "$a" "$mount/data/$pre/$KEY" "$tok" | json '["data"]["data"]["token"]') || return 1
	[[ $got == abc ]] || {
		echo "read back '$got', wrote 'abc'"
		return 1
	}
	got=$(vault 200 LIST "$a" "$mount/metadata/$pre" "$tok" | json '["data"]["keys"]') || return 1
	[[ $got == *"\"$KEY\""* ]] || {
		echo "LIST $pre does not show $KEY: $got"
		return 1
	}
	# The policy confines the AppRole token to its prefix.
	vault 403 POST "$a" "$mount/data/not-$pre/$KEY" "$tok" '{"data":{"token":"abc"}}' >/dev/null || return 1
	vault 204 DELETE "$a" "$mount/metadata/$pre/$KEY" "$tok" >/dev/null || return 1
	vault 404 GET "$a" "$mount/data/$pre/$KEY" "$tok" >/dev/null || return 1
	vault 200 GET "$a" auth/token/lookup-self "$tok" >/dev/null || return 1
	vault 200 POST "$a" auth/token/renew-self "$tok" '{}' >/dev/null
}

vault_short_role() {
	need TOKEN_STORE_TEST_VAULT_ADDR TOKEN_STORE_TEST_VAULT_SHORT_ROLE_ID TOKEN_STORE_TEST_VAULT_SHORT_SECRET_ID || return 1
	local out ttl
	out=$(vault 200 POST "$TOKEN_STORE_TEST_VAULT_ADDR" auth/approle/login "" \
		"{\"role_id\":\"$TOKEN_STORE_TEST_VAULT_SHORT_ROLE_ID\",\"secret_id\":\"$TOKEN_STORE_TEST_VAULT_SHORT_SECRET_ID\"}") || return 1
	ttl=$(json '["auth"]["lease_duration"]' <<<"$out") || return 1
	[[ $ttl == 10 ]] || {
		echo "short role token lease_duration is $ttl, want 10"
		return 1
	}
}

vault_root() {
	need TOKEN_STORE_TEST_VAULT_ADDR TOKEN_STORE_TEST_VAULT_TOKEN || return 1
	vault 200 GET "$TOKEN_STORE_TEST_VAULT_ADDR" auth/token/lookup-self "$TOKEN_STORE_TEST_VAULT_TOKEN" >/dev/null
}

vault_tls() {
	need TOKEN_STORE_TEST_VAULT_TLS_ADDR TOKEN_STORE_TEST_VAULT_TLS_CACERT TOKEN_STORE_TEST_VAULT_TLS_TOKEN || return 1
	local a=$TOKEN_STORE_TEST_VAULT_TLS_ADDR ca=$TOKEN_STORE_TEST_VAULT_TLS_CACERT
	[[ $a == https://* ]] || return 1
	vault 200 GET "$a" sys/health "" "" --cacert "$ca" >/dev/null || return 1
	vault 200 GET "$a" auth/token/lookup-self "$TOKEN_STORE_TEST_VAULT_TLS_TOKEN" "" --cacert "$ca" >/dev/null || return 1
	# Without the CA the certificate must not verify (curl exit 60).
	if curl -sS -o /dev/null "$a/v1/sys/health" 2>/dev/null; then
		echo "TLS OpenBao verified without its CA"
		return 1
	fi
}

# The restart script brings the dev server back (empty, it is in memory) with the same root token
# and AppRole credentials.
vault_restart() {
	need TOKEN_STORE_TEST_VAULT_RESTART TOKEN_STORE_TEST_VAULT_PIDFILE TOKEN_STORE_TEST_VAULT_ROLE_ID || return 1
	local old tok
	old=$(cat "$TOKEN_STORE_TEST_VAULT_PIDFILE")
	tok=$(approle_login "$TOKEN_STORE_TEST_VAULT_ROLE_ID" "$TOKEN_STORE_TEST_VAULT_SECRET_ID") || return 1
	"$TOKEN_STORE_TEST_VAULT_RESTART" >/dev/null || return 1
	[[ $(cat "$TOKEN_STORE_TEST_VAULT_PIDFILE") != "$old" ]] || {
		echo "pid file not updated"
		return 1
	}
	vault 403 GET "$TOKEN_STORE_TEST_VAULT_ADDR" auth/token/lookup-self "$tok" >/dev/null || {
		echo "a token from before the restart still works"
		return 1
	}
	vault_root && vault_approle_kv
}

# ---------------------------------------------------------------- PostgreSQL

# psql with a connection string; the test URLs are libpq URLs (TLS ones carry sslmode=verify-full
# and sslrootcert=<the test CA>, mutual TLS ones sslcert/sslkey too).
pg() { # pg URL SQL: one value
	psql -X -q -A -t -v ON_ERROR_STOP=1 -d "$1" -c "$2" </dev/null
}

postgres_plain() { # postgres_plain VAR: a table of our own, insert/select/drop
	need "$1" || return 1
	local url=${!1} t=smoke_${KEY//[^a-zA-Z0-9]/_}
	expect 1 pg "$url" "SELECT 1" || return 1
	pg "$url" "CREATE TABLE $t (v text); INSERT INTO $t VALUES ('v1')" >/dev/null || return 1
	expect v1 pg "$url" "SELECT v FROM $t" || return 1
	pg "$url" "DROP TABLE $t" >/dev/null
}

postgres_tls() {
	need TOKEN_STORE_TEST_POSTGRES_TLS_URL TOKEN_STORE_TEST_POSTGRES_MTLS_URL || return 1
	local url=$TOKEN_STORE_TEST_POSTGRES_TLS_URL plain
	expect t pg "$url" "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()" || return 1
	expect tscert pg "$TOKEN_STORE_TEST_POSTGRES_MTLS_URL" "SELECT current_user" || return 1
	# The server takes TLS only: the same URL without TLS is refused.
	plain=${url/sslmode=verify-full/sslmode=disable}
	if pg "$plain" "SELECT 1" >/dev/null 2>&1; then
		echo "a plaintext connection was accepted by the TLS-only server"
		return 1
	fi
}

postgres_crash_config() {
	need TOKEN_STORE_TEST_POSTGRES_CRASH_URL TOKEN_STORE_TEST_POSTGRES_CRASH_PIDFILE \
		TOKEN_STORE_TEST_POSTGRES_CRASH_RESTART || return 1
	expect on pg "$TOKEN_STORE_TEST_POSTGRES_CRASH_URL" "SHOW fsync" || return 1
	expect on pg "$TOKEN_STORE_TEST_POSTGRES_CRASH_URL" "SHOW synchronous_commit" || return 1
	[[ -x $TOKEN_STORE_TEST_POSTGRES_CRASH_RESTART ]] || {
		echo "restart script $TOKEN_STORE_TEST_POSTGRES_CRASH_RESTART is not executable"
		return 1
	}
	kill -0 "$(cat "$TOKEN_STORE_TEST_POSTGRES_CRASH_PIDFILE")" || return 1
}

# A commit acknowledged before SIGKILL of the postmaster must be there after the restart script.
postgres_crash() {
	need TOKEN_STORE_TEST_POSTGRES_CRASH_URL TOKEN_STORE_TEST_POSTGRES_CRASH_PIDFILE \
		TOKEN_STORE_TEST_POSTGRES_CRASH_RESTART || return 1
	local url=$TOKEN_STORE_TEST_POSTGRES_CRASH_URL t=smoke_${KEY//[^a-zA-Z0-9]/_} pid
	pg "$url" "CREATE TABLE $t (v text); INSERT INTO $t VALUES ('durable')" >/dev/null || return 1
	pid=$(cat "$TOKEN_STORE_TEST_POSTGRES_CRASH_PIDFILE")
	kill -9 "$pid"
	while kill -0 "$pid" 2>/dev/null && ! grep -q '^State:.*Z' "/proc/$pid/status" 2>/dev/null; do sleep 0.05; done
	"$TOKEN_STORE_TEST_POSTGRES_CRASH_RESTART" || return 1
	[[ $(cat "$TOKEN_STORE_TEST_POSTGRES_CRASH_PIDFILE") != "$pid" ]] || {
		echo "pid file not updated"
		return 1
	}
	expect durable pg "$url" "SELECT v FROM $t" || return 1
	pg "$url" "DROP TABLE $t" >/dev/null
}

# ---------------------------------------------------------------- Secret Service, keyutils

secret_service() {
	need TOKEN_STORE_TEST_SECRET_SERVICE TOKEN_STORE_TEST_DBUS_ADDRESS || return 1
	export DBUS_SESSION_BUS_ADDRESS=$TOKEN_STORE_TEST_DBUS_ADDRESS
	unset DISPLAY WAYLAND_DISPLAY
	printf 's3cret-%s' "$KEY" | secret-tool store --label="token-store smoke" service token-store-smoke key "$KEY" || return 1
	expect "s3cret-$KEY" secret-tool lookup service token-store-smoke key "$KEY" || return 1
	secret-tool clear service token-store-smoke key "$KEY" || return 1
	if secret-tool lookup service token-store-smoke key "$KEY" >/dev/null 2>&1; then
		echo "item still there after clear"
		return 1
	fi
}

keyutils() {
	need TOKEN_STORE_TEST_KEYUTILS || return 1
	# A private session keyring, as the tests use: nothing lands in root's shared @u / @s.
	# shellcheck disable=SC2016 # the inner script expands its own "$1"
	keyctl session - bash -c '
		set -e
		id=$(keyctl add user "$1" "payload-$1" @s)
		[ "$(keyctl pipe "$id")" = "payload-$1" ]
		[ "$(keyctl search @s user "$1")" = "$id" ]
		keyctl unlink "$id" @s >/dev/null
		! keyctl search @s user "$1" >/dev/null 2>&1' _ "$KEY" >/dev/null
}

if [[ ${1:-} == __check ]]; then
	shift
	"$@"
	exit
fi

check "redis: PING, set/get" redis_plain TOKEN_STORE_TEST_REDIS_URL
check "redis-aof: PING, set/get" redis_plain TOKEN_STORE_TEST_REDIS_AOF_URL
check "redis-aof: appendonly yes, appendfsync always, restart script" redis_aof_config
check "redis-cluster: cluster_state:ok on 6 nodes, 3 replicas, set/get via -c" redis_cluster
check "redis-tls: PING with the test CA, plaintext refused" redis_tls
check "redis-mtls: PING with client cert, refused without" redis_mtls
check "redis-sentinel: quorum of 3 on mymaster, set/get on the master it names" sentinel TOKEN_STORE_TEST_REDIS_SENTINEL_URL
check "redis-tls-cluster: TLS only, cluster_state:ok on 6 nodes, set/get via -c" redis_tls_cluster
check "redis-tls-sentinel: TLS only, quorum of 3, set/get on the master it names" redis_tls_sentinel
check "openbao: root token lookup-self" vault_root
check "openbao: AppRole login, KV v2 write/read/list/delete in prefix, 403 outside" vault_approle_kv
check "openbao: short AppRole token TTL 10s" vault_short_role
check "openbao-tls: health and token with the CA, unverified without" vault_tls
check "secret service: secret-tool store/lookup/clear on the private bus" secret_service
check "keyutils: add/read/search/unlink in keyctl session -" keyutils
check "postgres: password login, create/insert/select/drop" postgres_plain TOKEN_STORE_TEST_POSTGRES_URL
check "postgres-crash: password login, fsync on, restart script" postgres_crash_config
check "postgres-tls: verify-full with the test CA, client-cert role, plaintext refused" postgres_tls
if [[ -n $WITH_RESTART ]]; then
	check "redis-aof: write, kill -9, restart script, data still there" redis_aof_crash
	check "openbao: restart script, same root token and AppRole credentials" vault_restart
	check "postgres-crash: commit, kill -9, restart script, row still there" postgres_crash
fi

echo "$passed passed, $failed failed"
((failed == 0))
