#!/usr/bin/env bash
# Runs the whole test suite with Node's test runner (TypeScript through tsx).
#
# Each test file gets at most FCN_TEST_TIMEOUT_MS (default 30 minutes). Node 20 applies
# --test-timeout to a test file as a whole, and kills the file's process when the time is up,
# so a deadlock — a hang in native code or in a synchronous loop, which the per-test timeouts
# inside a file cannot interrupt (they are timers on the blocked event loop) — fails the run
# instead of stalling it for ever. The budget is for the slowest file on a busy machine:
# measured on 2 cores shared with other work, test/train/overfit.test.ts took 18 min (load
# 12-16), test/models/parity.test.ts 6 min (load 7), test/train/trainer.test.ts 3.5 min.
# A CI machine of its own can set a tighter one; an argument --test-timeout=N overrides both.
#
# Where oneDNN runs AVX-512 kernels (and ONEDNN_MAX_CPU_ISA does not already cap it), a second
# run takes the engine, model-parity, quantization, reference and `fcn info` tests again under
# ONEDNN_MAX_CPU_ISA=AVX2: the AVX2 kernels round, block, refuse bf16 and Winograd, and saturate
# int8 sums differently, so one `npm test` on such a machine covers both kernel families. It
# fails if either run fails.
set -euo pipefail
case "${1:-}" in
  -h | --help) sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"; exit 0 ;;
esac
cd "$(dirname "$0")/.."
bash scripts/setup.sh --test
mapfile -t files < <(find test -name '*.test.ts' | sort)
# Both runs' output is kept, to close with one line counting the tests of both.
output=$(mktemp)
trap 'rm -f "$output"' EXIT
run_tests() {
  node --import tsx --test --test-concurrency=1 --test-timeout="${FCN_TEST_TIMEOUT_MS:-1800000}" "$@" | tee -a "$output"
}
# The runner's own summary lines, "# pass N" at the start of a line.
total() { awk -v k="$1" '$1 == "#" && $2 == k && $3 ~ /^[0-9]+$/ && NF == 3 { n += $3 } END { print n + 0 }' "$output"; }

isa=$(node -p "require('./build/Release/fcn_native.node').info().isa")
if [[ $isa != avx512* || -n ${ONEDNN_MAX_CPU_ISA:-} || -n ${DNNL_MAX_CPU_ISA:-} ]]; then
  run_tests "$@" "${files[@]}"
  exit
fi

# A new file in these folders joins the second run by itself.
mapfile -t avx2_files < <(find test/engine test/models test/quant test/reference -name '*.test.ts' | sort; echo test/cli/info.test.ts)

echo "==== test run 1 of 2: every test file, oneDNN at this CPU's ISA ($isa)"
first=0
run_tests "$@" "${files[@]}" || first=$?
echo "==== test run 2 of 2: ${#avx2_files[@]} engine, model, quantization, reference and fcn info test files under ONEDNN_MAX_CPU_ISA=AVX2 (the AVX2 kernels)"
start=$SECONDS
second=0
ONEDNN_MAX_CPU_ISA=AVX2 run_tests "$@" "${avx2_files[@]}" || second=$?
verdict() { if [ "$1" = 0 ]; then echo passed; else echo "FAILED (exit $1)"; fi; }
echo "==== test run 1 ($isa): $(verdict $first)"
echo "==== test run 2 (ONEDNN_MAX_CPU_ISA=AVX2, $((SECONDS - start)) s): $(verdict $second)"
echo "both runs: $(total pass) passed, $(total fail) failed, $(total skipped) skipped"
[ $first != 0 ] && exit $first
exit $second
