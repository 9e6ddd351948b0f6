#!/usr/bin/env bash
# Fuzz the decoder: native/fuzz/run.sh SECONDS
#
# Builds fuzz_decode.c with libFuzzer, AddressSanitizer and UndefinedBehaviorSanitizer against the
# decoder's C files only (no AF_XDP, no libxdp), writes the seed corpus, and runs libFuzzer for
# SECONDS. Exits non-zero on any crash, sanitizer report, broken invariant, leak or timeout; the
# reproducer is left in native/fuzz/out/ (crash-*, leak-*, timeout-*). The corpus libFuzzer grows
# stays in native/fuzz/out/corpus and is reused by the next run.
set -euo pipefail

SECONDS_TO_RUN=${1:-30}
if ! [[ $SECONDS_TO_RUN =~ ^[0-9]+$ ]] || [ "$SECONDS_TO_RUN" -lt 1 ]; then
  echo "usage: $0 SECONDS (a whole number >= 1)" >&2
  exit 2
fi

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
SRC=$ROOT/native/src
OUT=$HERE/out
CLANG=${CLANG:-clang}
PYTHON=${PYTHON:-$ROOT/.venv/bin/python}
[ -x "$PYTHON" ] || PYTHON=python3

mkdir -p "$OUT/corpus" "$OUT/seeds"

# Debian's clang finds asm/ headers only with the multiarch include directory.
ARCH_INCLUDE=/usr/include/$(uname -m)-linux-gnu
INCLUDES=(-I"$SRC")
[ -d "$ARCH_INCLUDE" ] && INCLUDES+=(-I"$ARCH_INCLUDE")

echo "fuzz: building $OUT/fuzz_decode"
"$CLANG" -g -O1 -std=gnu11 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all \
  -fno-omit-frame-pointer "${INCLUDES[@]}" \
  "$HERE/fuzz_decode.c" "$SRC/decode.c" "$SRC/exchange_time.c" "$SRC/itch.c" "$SRC/hist.c" -o "$OUT/fuzz_decode"

"$PYTHON" "$HERE/seeds.py" "$OUT/seeds"

echo "fuzz: running for ${SECONDS_TO_RUN}s"
export ASAN_OPTIONS=${ASAN_OPTIONS:-abort_on_error=1:detect_leaks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}
status=0
"$OUT/fuzz_decode" -max_total_time="$SECONDS_TO_RUN" -max_len=8192 -timeout=10 \
  -rss_limit_mb=2048 -print_final_stats=1 -artifact_prefix="$OUT/" \
  "$OUT/corpus" "$OUT/seeds" 2>"$OUT/fuzz.log" || status=$?

grep -E "^(stat::number_of_executed_units|stat::new_units_added|#[0-9]+ +DONE)" "$OUT/fuzz.log" || true
if [ "$status" -ne 0 ]; then
  tail -n 60 "$OUT/fuzz.log" >&2
  echo "fuzz: FAILED (exit $status); reproducer and log in $OUT/" >&2
  exit "$status"
fi
echo "fuzz: no crash in ${SECONDS_TO_RUN}s (log: $OUT/fuzz.log)"
