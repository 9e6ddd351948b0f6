#!/usr/bin/env bash
# Fuzz the decoder.
#
#   native/fuzz/run.sh --gate      the deterministic gate `make test` runs: every input in
#                                  native/fuzz/regressions/ (each crash ever found, minimised) and
#                                  the seed corpus replayed, then a fixed-seed run of a fixed number
#                                  of executions from those inputs alone: the same inputs every time
#   native/fuzz/run.sh SECONDS     the long random run a developer starts (`make fuzz`); its corpus
#                                  grows in native/fuzz/out/corpus and is reused by the next run
#
# Builds fuzz_decode.c with libFuzzer, AddressSanitizer and UndefinedBehaviorSanitizer against the
# decoder's and the books' C files only (no AF_XDP, no libxdp) and writes the seed corpus first. Exits non-zero on
# any crash, sanitizer report, broken invariant, leak or timeout; the reproducer is left in
# native/fuzz/out/ (crash-*, leak-*, timeout-*). Minimise it and keep it:
#   native/fuzz/out/fuzz_decode -minimize_crash=1 -max_total_time=60 \
#       -exact_artifact_path=native/fuzz/regressions/crash-WHAT native/fuzz/out/crash-...
set -euo pipefail

# The gate's fixed run: about 20 s here at light load, 40-48 s while four other helpers build
# (measured, build included); GATE_SEED and GATE_RUNS may be overridden for a one-off deeper look.
GATE_SEED=${GATE_SEED:-20261201}
GATE_RUNS=${GATE_RUNS:-100000}

usage() {
  echo "usage: $0 --gate | SECONDS (a whole number >= 1)" >&2
  exit 2
}
MODE=${1:-30}
if [ "$MODE" != "--gate" ] && { ! [[ $MODE =~ ^[0-9]+$ ]] || [ "$MODE" -lt 1 ]; }; then
  usage
fi

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
SRC=$ROOT/native/src
OUT=$HERE/out
REGRESSIONS=$HERE/regressions
CLANG=${CLANG:-clang}
PYTHON=${PYTHON:-$ROOT/.venv/bin/python}
[ -x "$PYTHON" ] || PYTHON=python3

mkdir -p "$OUT/corpus" "$OUT/seeds"

# Debian's clang finds asm/ headers only with the multiarch include directory.
ARCH_INCLUDE=/usr/include/$(uname -m)-linux-gnu
INCLUDES=(-I"$SRC")
[ -d "$ARCH_INCLUDE" ] && INCLUDES+=(-I"$ARCH_INCLUDE")

# Coverage guidance (and its comparison tracing) for the decoder only: the harness's own checks
# would only slow every execution down.
echo "fuzz: building $OUT/fuzz_decode"
CFLAGS=(-g -O1 -std=gnu11 -fno-sanitize-recover=all -fno-omit-frame-pointer "${INCLUDES[@]}")
"$CLANG" "${CFLAGS[@]}" -fsanitize=address,undefined -c "$HERE/fuzz_decode.c" -o "$OUT/fuzz_decode.o"
DECODER_OBJS=()
for c in decode rerequest exchange_time itch hist book stream; do
  "$CLANG" "${CFLAGS[@]}" -fsanitize=fuzzer-no-link,address,undefined -c "$SRC/$c.c" -o "$OUT/$c.o"
  DECODER_OBJS+=("$OUT/$c.o")
done
# The books' self-check runs after every step: sanitized, but not traced for coverage.
"$CLANG" "${CFLAGS[@]}" -fsanitize=address,undefined -c "$SRC/book_check.c" -o "$OUT/book_check.o"
DECODER_OBJS+=("$OUT/book_check.o")
"$CLANG" -fsanitize=fuzzer,address,undefined "$OUT/fuzz_decode.o" "${DECODER_OBJS[@]}" \
  -o "$OUT/fuzz_decode"

"$PYTHON" "$HERE/seeds.py" "$OUT/seeds"

export ASAN_OPTIONS=${ASAN_OPTIONS:-abort_on_error=1:detect_leaks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}
FLAGS=(-max_len=8192 -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 -artifact_prefix="$OUT/")

fail() {
  tail -n 60 "$1" >&2
  echo "fuzz: FAILED ($2); reproducer and log in $OUT/" >&2
  exit 1
}

if [ "$MODE" = "--gate" ]; then
  shopt -s nullglob
  inputs=("$REGRESSIONS"/* "$OUT/seeds"/*)
  echo "fuzz: replaying ${#inputs[@]} inputs (regressions and seeds)"
  "$OUT/fuzz_decode" "${FLAGS[@]}" "${inputs[@]}" >"$OUT/replay.log" 2>&1 \
    || fail "$OUT/replay.log" "replay"

  # A corpus dir of its own, emptied first: the run depends on the committed inputs only. And
  # -reload=0: re-reading the corpus dir every second is the one clock-driven choice libFuzzer
  # makes; without it the same seed explores the same inputs (measured: identical ft/corpus).
  gate_corpus=$OUT/gate-corpus
  rm -rf "$gate_corpus"
  mkdir -p "$gate_corpus"
  echo "fuzz: fixed run, -seed=$GATE_SEED -runs=$GATE_RUNS"
  "$OUT/fuzz_decode" "${FLAGS[@]}" -seed="$GATE_SEED" -runs="$GATE_RUNS" -reload=0 \
    "$gate_corpus" "$REGRESSIONS" "$OUT/seeds" >"$OUT/gate.log" 2>&1 \
    || fail "$OUT/gate.log" "fixed-seed run"
  grep -E "^(stat::number_of_executed_units|stat::new_units_added|#[0-9]+[[:space:]]+DONE)" "$OUT/gate.log" || true
  echo "fuzz: gate passed (logs: $OUT/replay.log, $OUT/gate.log)"
  exit 0
fi

echo "fuzz: running for ${MODE}s"
status=0
"$OUT/fuzz_decode" "${FLAGS[@]}" -max_total_time="$MODE" \
  "$OUT/corpus" "$OUT/seeds" "$REGRESSIONS" 2>"$OUT/fuzz.log" || status=$?

grep -E "^(stat::number_of_executed_units|stat::new_units_added|#[0-9]+[[:space:]]+DONE)" "$OUT/fuzz.log" || true
[ "$status" -eq 0 ] || fail "$OUT/fuzz.log" "exit $status"
echo "fuzz: no crash in ${MODE}s (log: $OUT/fuzz.log)"
