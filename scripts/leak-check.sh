#!/usr/bin/env bash
# Leak and memory-error check of the native addon under valgrind (run by hand; takes a few minutes).
#  1. a short `vgg train` run (native backend) under memcheck --leak-check=full;
#  2. the native fuzz child (test/fuzz-native.test.ts) with a few runs per entry point under memcheck, to
#     catch out-of-bounds *reads* that the canaries of the fuzz test cannot see.
# Node and V8 report their own noise (JIT code, intentional process-lifetime allocations), so only records
# with a frame in vgg_native.node count. Exit code 0 when none is found.
# Usage: scripts/leak-check.sh [fuzz-runs-per-entry-point (default 60)]   (after `npx tsc -p .`)
set -euo pipefail
cd "$(dirname "$0")/.."
runs="${1:-60}"
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
export VGG_KERNEL_CACHE=off

vg=(valgrind --tool=memcheck --leak-check=full --show-leak-kinds=definite,indirect,possible
  --errors-for-leak-kinds=definite --num-callers=30 --error-limit=no)

echo "== 1/2: vgg train under valgrind (leaks and memory errors)"
"${vg[@]}" --log-file="$out/train.log" node bin/vgg train --arch 1x8,1x16 --ratio 1 --resize 28 \
  --classifier-width 32 --limit-train 256 --limit-test 64 --epochs 1 --threads 2 --out "$out/run" >"$out/train.out"
tail -n 2 "$out/train.out"

echo "== 2/2: native fuzz child ($runs runs per entry point) under valgrind (invalid reads/writes)"
VGG_FUZZ_NATIVE_CHILD=1 VGG_FUZZ_NATIVE_RUNS="$runs" VGG_CONV_ALGO=direct \
  "${vg[@]}" --log-file="$out/fuzz.log" node dist/test/fuzz-native.test.js >"$out/fuzz.out"
echo "calls: $(cat "$out/fuzz.out")"

# A valgrind record is a block of lines starting "==pid== " and ending at a blank "==pid== " line; keep
# the records that mention the addon.
addon_records() {
  awk '/^==[0-9]+== $/ { if (rec ~ /vgg_native\.node/) print rec "\n"; rec = ""; next }
       /^==[0-9]+== / { rec = rec $0 "\n" }' "$1"
}

status=0
for log in train fuzz; do
  summary="$(grep -E "definitely lost|indirectly lost|possibly lost|ERROR SUMMARY" "$out/$log.log" | sed 's/^==[0-9]*== //')"
  records="$(addon_records "$out/$log.log")"
  # Errors and definite/indirect leaks count; "possibly lost" blocks are reported but do not fail: the
  # thread pool's workers live until exit, and their stacks (TLS from pthread_create) show up as such.
  bad="$(printf '%s' "$records" | grep -E '^==[0-9]+== (Invalid|Conditional|Use of|Mismatched|Syscall|Source and destination|[0-9,]+ (\([0-9,]+ direct, [0-9,]+ indirect\) )?bytes in [0-9,]+ blocks are (definitely|indirectly) lost)' || true)"
  possibly="$(printf '%s' "$records" | grep -cE 'are possibly lost' || true)"
  threads="$(printf '%s' "$records" | grep -cE 'Pool::resize' || true)"
  echo "-- $log: valgrind totals for the whole process (node included):"
  echo "$summary" | sed 's/^/   /'
  echo "-- $log: addon records: $(printf '%s' "$bad" | grep -c . || true) errors or definite/indirect leaks," \
    "$possibly possibly-lost blocks ($threads of them from the thread pool's live worker threads)"
  if [ -n "$bad" ]; then
    printf '%s\n' "$records" | head -n 120
    status=1
  fi
done
exit $status
