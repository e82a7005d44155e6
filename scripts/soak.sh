#!/usr/bin/env bash
# Soak mode of the torture suite (tests/tests/soak.rs, tests/src/soak.rs): mixed load on the AOF
# Redis, OpenBao and a SQLite file for an hour, with faults injected at random (Redis SIGSTOP and
# SIGKILL + restart, OpenBao SIGSTOP and restart, a SQLite writer SIGKILLed mid-write); prints
# ops, faults, errors by kind, p99 latency per minute and records lost. Not part of CI.
#
#   scripts/soak.sh [SECONDS]        default: TOKEN_STORE_SOAK_SECS, else 3600
#
# Settings: TOKEN_STORE_SOAK_FAULT_EVERY=MIN-MAX (seconds between faults, default 8-20),
# TOKEN_STORE_SOAK_SERVICES_DIR (default /tmp/token-store-soak-services).
#
# It starts services of its own and stops them at the end: its faults kill and restart servers,
# which must never hit another test run using the shared ones.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo >/dev/null 2>&1 && [ -f "$HOME/.cargo/env" ]; then
	# shellcheck disable=SC1091
	. "$HOME/.cargo/env"
fi

secs=${1:-${TOKEN_STORE_SOAK_SECS:-3600}}
[[ $secs =~ ^[0-9]+$ ]] || {
	echo "soak: SECONDS must be a number, not $secs" >&2
	exit 2
}
export TOKEN_STORE_SERVICES_DIR=${TOKEN_STORE_SOAK_SERVICES_DIR:-/tmp/token-store-soak-services}
[[ $TOKEN_STORE_SERVICES_DIR != /tmp/token-store-services ]] || {
	echo "soak: refusing to fault the shared services in $TOKEN_STORE_SERVICES_DIR" >&2
	exit 2
}
# Built before the services start, so they are not kept waiting for the compiler.
cargo test -q -p token-store-conformance --test soak --no-run >&2
# On a failure the services' logs are kept (the services directory goes with `stop`).
keep_logs() {
	local status=$? keep
	if [[ $status -ne 0 && -d $TOKEN_STORE_SERVICES_DIR ]]; then
		keep=$(mktemp -d /tmp/token-store-soak-logs.XXXXXX)
		(cd "$TOKEN_STORE_SERVICES_DIR" && find . -name log -exec cp --parents {} "$keep" \;) || true
		echo "soak: failed ($status); service logs kept in $keep" >&2
	fi
	scripts/services.sh stop >&2 || true
}
trap keep_logs EXIT
services_env=$(scripts/services.sh start)
eval "$services_env"
echo "soak: ${secs}s on services in $TOKEN_STORE_SERVICES_DIR" >&2
TOKEN_STORE_SOAK=1 TOKEN_STORE_SOAK_SECS=$secs \
	cargo test -q -p token-store-conformance --test soak -- --exact soak --nocapture
