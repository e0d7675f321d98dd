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
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --test
mapfile -t files < <(find test -name '*.test.ts' | sort)
exec node --import tsx --test --test-concurrency=1 --test-timeout="${FCN_TEST_TIMEOUT_MS:-1800000}" "$@" "${files[@]}"
