#!/usr/bin/env bash
# Instructions per call of the CPU-bound paths (typed layer, JSON, keys, cache hit, parsed-map
# floor), counted by callgrind: each probe runs N and 2N times, and (Ir(2N) - Ir(N)) / N
# cancels process start and setup. Deterministic on a noisy machine, unlike wall time.
#   benches/scripts/callgrind.sh [N] [probe ...]     (default N=2000, every probe)
set -euo pipefail
cd "$(dirname "$0")/../.."
n=${1:-2000}
shift || true
bin=target/release/token-store-bench
cargo build --release -q -p token-store-bench
probes=("$@")
if [ ${#probes[@]} -eq 0 ]; then
  probes=(json_decode json_decode_derived json_encode key_encode key_decode memory_get memory_get_cached memory_put map_get map_put memory_list map_list)
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
ir() {
  valgrind --tool=callgrind --callgrind-out-file="$tmp/out" "$bin" --probe "$1" --iterations "$2" >/dev/null 2>"$tmp/err"
  grep -E "^summary:|^totals:" "$tmp/out" | head -1 | awk '{print $2}'
}
printf '| probe | instructions per call |\n| --- | ---: |\n'
for p in "${probes[@]}"; do
  a=$(ir "$p" "$n")
  b=$(ir "$p" $((2 * n)))
  printf '| %s | %d |\n' "$p" $(( (b - a) / n ))
done
