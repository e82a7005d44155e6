#!/usr/bin/env bash
# The whole test run: start the real services, check formatting and lints, run every test,
# and stop the services again even when something fails.
set -euo pipefail
cd "$(dirname "$0")/.."

# Incremental compilation only costs time on a one-shot build.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"

if ! command -v cargo >/dev/null 2>&1 && [ -f "$HOME/.cargo/env" ]; then
  # shellcheck disable=SC1091
  . "$HOME/.cargo/env"
fi

# Stop the services on any exit, including failures and Ctrl-C.
trap 'scripts/services.sh stop >&2 || true' EXIT
services_env=$(scripts/services.sh start)
eval "$services_env"

echo "== cargo fmt --check" >&2
cargo fmt --all -- --check
echo "== cargo clippy -D warnings" >&2
cargo clippy --workspace --all-targets -- -D warnings
echo "== cargo test" >&2
# keyutils tests need a session keyring of their own; `keyctl session -` gives the test run a
# fresh anonymous one and passes the exit status through.
keyctl session - cargo test --workspace "$@"
