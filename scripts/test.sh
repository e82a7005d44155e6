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

# Stop the services on any exit, including failures and Ctrl-C; after a failure, first say
# which service died, if one did (its log goes with `stop`).
on_exit() {
  local rc=$?
  if ((rc != 0)); then
    scripts/services.sh dead-logs >&2 || true
  fi
  scripts/services.sh stop >&2 || true
}
trap on_exit EXIT
services_env=$(scripts/services.sh start)
eval "$services_env"
# Prove every service answers before spending minutes on the build.
scripts/smoke.sh >&2

echo "== cargo fmt --check" >&2
cargo fmt --all -- --check
echo "== cargo clippy -D warnings" >&2
cargo clippy --workspace --all-targets -- -D warnings
# The workspace build turns core's optional `metrics` feature on (a dev-dependency needs it):
# lint core once more as a user without the feature builds it.
cargo clippy -p token-store-core --all-targets -- -D warnings
# The macOS and Windows keychain code cannot run here, but it must compile: check it for those
# targets when rustup can provide them (a machine without them says so instead).
for target in x86_64-pc-windows-gnu aarch64-apple-darwin; do
  if rustup target list --installed 2>/dev/null | grep -qx "$target" ||
    rustup target add "$target" >/dev/null 2>&1; then
    echo "== cargo check keychain backend for $target" >&2
    cargo check -q -p token-store-keychain --target "$target"
  else
    echo "== not run: cargo check for $target (rustup cannot add the target here)" >&2
  fi
done
echo "== cargo doc (warnings denied)" >&2
RUSTDOCFLAGS="-D warnings" cargo doc -q --no-deps --workspace --exclude token-store-conformance
# What a user of `cargo add token-store` gets: each backend feature builds alone, and the lean
# default of an MCP client pulls no tool dependencies.
echo "== facade features one at a time" >&2
cargo check -q -p token-store --no-default-features
for feature in file sqlite redis vault keychain postgres oauth2 rmcp grants metrics; do
  cargo check -q -p token-store --no-default-features --features "$feature"
done
heavy=$(cargo tree -p token-store --no-default-features --features file -e normal --prefix none |
  grep -E '^(clap|indicatif|tracing-subscriber|aws-lc-rs|token-store-bench|rustls) ' || true)
if [ -n "$heavy" ]; then
  echo "token-store with only the file feature pulls tool dependencies:" >&2
  echo "$heavy" >&2
  exit 1
fi
echo "== README examples (with the rmcp feature they use)" >&2
cargo test -q -p token-store --doc --features rmcp,grants >&2
echo "== cargo package (every published crate)" >&2
cargo package -q --workspace --no-verify --allow-dirty --exclude token-store-conformance >/dev/null
echo "== a user crate outside the workspace (examples/user-crate)" >&2
user_dir=$(mktemp -d)
CARGO_TARGET_DIR="$PWD/target" cargo run -q --manifest-path examples/user-crate/Cargo.toml -- "$user_dir" >&2
rm -rf "$user_dir"
# Coverage-guided fuzzing of the decoders, a few seconds per target (fuzz/ is outside the
# workspace: its instrumented build never slows the tests).
echo "== fuzz (scripts/fuzz.sh --ci)" >&2
scripts/fuzz.sh --ci >&2
echo "== cargo test" >&2
# keyutils tests need a session keyring of their own; `keyctl session -` gives the test run a
# fresh anonymous one and passes the exit status through.
# Each conformance run appends its "cases run / not applicable" line here; printed at the end.
export TOKEN_STORE_CONFORMANCE_REPORT="$PWD/target/conformance-report.txt"
mkdir -p target && : > "$TOKEN_STORE_CONFORMANCE_REPORT"
keyctl session - cargo test --workspace "$@"
echo "== conformance per backend" >&2
grep -E '^(conformance|model check)\[' "$TOKEN_STORE_CONFORMANCE_REPORT" | sort >&2 || true
echo "== reliability (see RELIABILITY.md)" >&2
cargo run -q -p token-store-conformance --example reliability_table -- "$TOKEN_STORE_CONFORMANCE_REPORT" >&2
