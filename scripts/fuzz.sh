#!/usr/bin/env bash
# Coverage-guided fuzzing of token-store's decoders (record JSON, key headers, sealed values,
# keychain envelopes, storage keys) with libFuzzer, on the stable toolchain.
#
#   scripts/fuzz.sh --ci              build, run every target briefly on its seed corpus, report
#                                     executions and crashes; exit 1 on a crash (CI: scripts/test.sh)
#   scripts/fuzz.sh TARGET [SECONDS]  fuzz one target longer (default 300 s); new inputs that reach
#                                     new coverage are added to fuzz/corpus/TARGET (commit the good ones)
#   scripts/fuzz.sh --build           only build the targets
#   scripts/fuzz.sh --list            the target names
#
# Settings: TOKEN_STORE_FUZZ_SECS (seconds per target in --ci, default 5), TOKEN_STORE_FUZZ_JOBS
# (parallel targets in --ci, default 1).
#
# Why this and not `cargo fuzz`: cargo-fuzz passes nightly-only flags (-Zsanitizer=address and
# friends) and this machine has one stable toolchain. Coverage-guided libFuzzer needs none of them:
# rustc's stable `-C passes=sancov-module` plus `-C llvm-args=-sanitizer-coverage-*` emit the same
# inline 8-bit counters, PC table and comparison hooks cargo-fuzz asks for, and `libfuzzer-sys`
# compiles libFuzzer itself with the system C++ compiler. What is lost is AddressSanitizer, which
# Rust code without `unsafe` (the workspace forbids it) needs far less; panics, overflows (checked
# here) and debug assertions still abort as crashes. The targets keep cargo-fuzz's layout, so
# `cargo +nightly fuzz run record` works unchanged where nightly exists. `afl.rs` was the other
# stable option; it needs AFL++ built against the toolchain's own LLVM version for its compiler
# plugins, which Debian's LLVM 14 is not, while libFuzzer only needs the sancov pass rustc has.
#
# The fuzz crate is outside the main workspace (its own [workspace], lock file and target dir):
# `cargo test --workspace` never builds or instruments it.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo >/dev/null 2>&1 && [ -f "$HOME/.cargo/env" ]; then
	# shellcheck disable=SC1091
	. "$HOME/.cargo/env"
fi

TARGETS=(record key_header sealed keychain_envelope storage_key)
HOST=$(rustc -vV | sed -n 's/^host: //p')
BIN_DIR=fuzz/target/$HOST/release
ARTIFACTS=fuzz/artifacts

log() { printf 'fuzz: %s\n' "$*" >&2; }

build() {
	local t0=$SECONDS
	command -v c++ >/dev/null 2>&1 || command -v g++ >/dev/null 2>&1 ||
		{ log "ERROR: a C++ compiler is needed to build libFuzzer (apt-get install g++)"; exit 1; }
	# --target: RUSTFLAGS then reach only the target's crates, not build scripts and proc macros
	# (which would be instrumented without a libFuzzer to link against). Not --locked: the
	# fuzz lock file follows core's dependencies, which change without anyone touching fuzz/.
	RUSTFLAGS="-C passes=sancov-module -C llvm-args=-sanitizer-coverage-level=4 \
-C llvm-args=-sanitizer-coverage-inline-8bit-counters -C llvm-args=-sanitizer-coverage-pc-table \
-C llvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing ${RUSTFLAGS:-}" \
		CARGO_INCREMENTAL=0 cargo build -q --release --manifest-path fuzz/Cargo.toml \
		--target "$HOST" --target-dir fuzz/target --bins
	log "built ${#TARGETS[@]} targets in $((SECONDS - t0))s"
}

known() {
	local t
	for t in "${TARGETS[@]}"; do [[ $t == "$1" ]] && return 0; done
	return 1
}

# run TARGET SECONDS WORK_CORPUS: libFuzzer on the seed corpus (read) and WORK_CORPUS (written);
# prints "TARGET EXECS CRASHED(0/1) EXECS_PER_S" on stdout, libFuzzer's log in fuzz/target/TARGET.log.
run() {
	local target=$1 secs=$2 work=$3 logf=fuzz/target/$1.log rc=0 execs
	mkdir -p "$work" "$ARTIFACTS/$target"
	"$BIN_DIR/$target" "$work" "fuzz/corpus/$target" -max_total_time="$secs" -timeout=10 \
		-rss_limit_mb=2048 -max_len=65536 -print_final_stats=1 \
		-artifact_prefix="$ARTIFACTS/$target/" >"$logf" 2>&1 || rc=$?
	execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$logf" | tail -n 1)
	[[ -n $execs ]] || execs=0
	printf '%s %s %s %s\n' "$target" "$execs" "$((rc != 0))" "$((execs / (secs > 0 ? secs : 1)))"
}

ci() {
	local secs=${TOKEN_STORE_FUZZ_SECS:-5} jobs=${TOKEN_STORE_FUZZ_JOBS:-1} t line crashed=0 total=0
	local name execs crash rate work
	build
	work=$(mktemp -d "${TMPDIR:-/tmp}/token-store-fuzz.XXXXXX")
	# shellcheck disable=SC2064 # expand now: the path is fixed
	trap "rm -rf -- '$work'" EXIT
	local results=()
	if ((jobs > 1)); then
		local pids=() i=0
		for t in "${TARGETS[@]}"; do
			run "$t" "$secs" "$work/$t" >"$work/$t.result" &
			pids+=($!)
			i=$((i + 1))
			if ((i % jobs == 0)); then wait "${pids[@]}"; pids=(); fi
		done
		((${#pids[@]})) && wait "${pids[@]}"
		for t in "${TARGETS[@]}"; do results+=("$(cat "$work/$t.result")"); done
	else
		for t in "${TARGETS[@]}"; do results+=("$(run "$t" "$secs" "$work/$t")"); done
	fi
	printf '%-18s %12s %10s %8s\n' target executions execs/s crashed
	for line in "${results[@]}"; do
		read -r name execs crash rate <<<"$line"
		printf '%-18s %12s %10s %8s\n' "$name" "$execs" "$rate" "$([[ $crash == 1 ]] && echo YES || echo no)"
		total=$((total + execs))
		if [[ $crash == 1 ]]; then
			crashed=$((crashed + 1))
			log "$name crashed; input in $ARTIFACTS/$name/, log:"
			grep -E 'panicked|ERROR|SUMMARY|Test unit written' "fuzz/target/$name.log" | head -n 20 >&2 || true
		fi
	done
	echo "fuzz: ${#TARGETS[@]} targets, ${secs}s each, $total executions, $crashed crashed"
	# The plain closing line CI reads.
	echo "$((${#TARGETS[@]} - crashed)) passed, $crashed failed"
	((crashed == 0))
}

case ${1:-} in
--ci) ci ;;
--build) build ;;
--list) printf '%s\n' "${TARGETS[@]}" ;;
"" | -h | --help) sed -n '2,14s/^# \{0,1\}//p' "$0" >&2 ;;
*)
	known "$1" || {
		log "unknown target $1 (one of: ${TARGETS[*]})"
		exit 2
	}
	build
	secs=${2:-300}
	# New coverage goes straight into the repository's corpus for this target.
	"$BIN_DIR/$1" "fuzz/corpus/$1" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 \
		-max_len=65536 -print_final_stats=1 -artifact_prefix="$ARTIFACTS/$1/"
	;;
esac
