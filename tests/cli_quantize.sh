#!/usr/bin/env bash
# qstream quantize / verify / inspect end to end: an RTN run on a generated 24-block model;
# kill -9 at random moments (each followed by a resume; at least 20 runs, more until 5 kills
# have landed mid-run; every other kill waits for a random count of blocks recorded, see
# lib/kill-resume.sh) ends byte-identical to an uninterrupted run; a damaged shard is named by
# verify and recomputed by resume; a different
# setting is refused with what differs; an impossible --host-mem is refused before anything is
# written; a read-only OUT_DIR is a clear error and the run resumes afterwards.
set -u
bin=${QS_BIN:?run through ctest}
gen=$(dirname "$bin")/bench/gen_model
tmp=${QS_TMP:-/tmp}/cli_quantize
rm -rf "$tmp"; mkdir -p "$tmp"
fail=0
die() { echo "FAIL: $*"; fail=1; }
source "$(dirname "$0")/lib/kill-resume.sh"
"$gen" "$tmp/model" --shape tiny --layers 24 --shards 3 --dtype bf16 >/dev/null || { echo "FAIL: gen_model"; exit 1; }
q() { "$bin" quantize "$tmp/model" --method rtn --wbits 4 --group 64 --quiet "$@"; }

t0=$(date +%s%N)
q -o "$tmp/ref" || die "reference run"
t1=$(date +%s%N)
run_ms=$(( (t1 - t0) / 1000000 )); [ $run_ms -lt 50 ] && run_ms=50
"$bin" verify "$tmp/ref" >/dev/null || die "verify of the reference run"
[ "$(ls "$tmp/ref/blocks" | wc -l)" -eq 24 ] || die "expected 24 shards"

# kill -9 at random moments, resuming each time
mid=0 runs=0
for i in $(seq 1 60); do
  [ "$i" -gt 20 ] && [ "$mid" -ge 5 ] && break
  runs=$i
  "$bin" quantize "$tmp/model" --method rtn --wbits 4 --group 64 --quiet -o "$tmp/killed" 2>/dev/null &
  pid=$!
  kr_wait "$i" $pid "$run_ms" 24 "$tmp/killed"
  kill -9 $pid 2>/dev/null; wait $pid 2>/dev/null
  n=$(grep -c '"block":' "$tmp/killed/manifest.json" 2>/dev/null); n=${n:-0}
  [ "$n" -gt 0 ] && [ "$n" -lt 24 ] && mid=$((mid + 1))
  if [ "$n" -eq 24 ]; then # finished before the kill: check it, then start a fresh run
    for f in "$tmp/ref/blocks/"*.qsh; do
      cmp -s "$f" "$tmp/killed/blocks/$(basename "$f")" || die "$(basename "$f") differs after kill/resume ($i)"
    done
    rm -rf "$tmp/killed"
  fi
  "$bin" verify "$tmp/killed" >/dev/null 2>&1 || [ ! -e "$tmp/killed/manifest.json" ] || die "verify after kill $i"
done
echo "kills that landed mid-run: $mid of $runs"
[ $mid -ge 5 ] || die "only $mid kills landed mid-run"
q -o "$tmp/killed" || die "final resume"
for f in "$tmp/ref/blocks/"*.qsh; do
  cmp -s "$f" "$tmp/killed/blocks/$(basename "$f")" || die "$(basename "$f") differs after kill/resume"
done
ls "$tmp/killed/blocks" | grep -q '\.tmp$' && die "temp files left behind"

# damage: verify names the block, resume recomputes it to the same bytes
cp -r "$tmp/ref" "$tmp/damaged"
printf '\x55' | dd of="$tmp/damaged/blocks/block-0007.qsh" bs=1 seek=5000 conv=notrunc status=none
out=$("$bin" verify "$tmp/damaged" 2>&1); rc=$?
[ $rc -eq 1 ] || die "verify exit $rc on a damaged shard"
grep -q "block 7" <<<"$out" || die "verify does not name block 7: $out"
q -o "$tmp/damaged" || die "resume of the damaged run"
cmp -s "$tmp/ref/blocks/block-0007.qsh" "$tmp/damaged/blocks/block-0007.qsh" || die "recomputed block 7 differs"
"$bin" verify "$tmp/damaged" >/dev/null || die "verify after repair"

# a damaged manifest is refused clearly
cp -r "$tmp/ref" "$tmp/badman"
head -c 100 "$tmp/ref/manifest.json" > "$tmp/badman/manifest.json"
out=$(q -o "$tmp/badman" 2>&1) && die "a truncated manifest was accepted"
grep -q "manifest.json" <<<"$out" || die "message does not name the manifest: $out"

# a different setting is refused, --restart starts over
out=$("$bin" quantize "$tmp/model" -o "$tmp/ref" --method rtn --wbits 3 --group 64 --quiet 2>&1) && die "a mismatched run was accepted"
grep -q "method.wbits: 4 -> 3" <<<"$out" || die "mismatch message: $out"
"$bin" quantize "$tmp/model" -o "$tmp/ref3" --method rtn --wbits 3 --group 64 --quiet --restart || die "--restart"

# a file-size limit hit mid-run (as a full disk would be): a clear error, nothing half-written,
# then the same command finishes once there is room, byte-identical to the reference
out=$(ulimit -f 40; q -o "$tmp/full" 2>&1) && die "the size-limited run succeeded"
grep -qiE "too large|no space" <<<"$out" || die "size-limit message: $out"
ls "$tmp/full/blocks" 2>/dev/null | grep -q '\.tmp$' && die "a temp file was left after the write error"
"$bin" verify "$tmp/full" >/dev/null || die "verify after the write error"
q -o "$tmp/full" || die "resume after the write error"
for f in "$tmp/ref/blocks/"*.qsh; do cmp -s "$f" "$tmp/full/blocks/$(basename "$f")" || die "$(basename "$f") differs after the write error"; done

# budgets and permissions
out=$(q -o "$tmp/small" --host-mem 1M 2>&1) && die "--host-mem 1M accepted"
grep -q "cannot hold one block" <<<"$out" || die "budget message: $out"
[ -e "$tmp/small" ] && die "--host-mem refusal left $tmp/small behind"
if [ "$(id -u)" != 0 ]; then
  mkdir -p "$tmp/ro"; chmod 500 "$tmp/ro"
  out=$(q -o "$tmp/ro/out" 2>&1) && die "read-only OUT_DIR accepted"
fi
# a read-only OUT_DIR (a read-only bind mount; root ignores permission bits) with a block left to
# do: a clear error naming the file system, the run intact, and it resumes once writable
cp -r "$tmp/ref" "$tmp/rorun"; rm "$tmp/rorun/blocks/block-0023.qsh"
if mount --bind "$tmp/rorun" "$tmp/rorun" 2>/dev/null; then
  if mount -o remount,ro,bind "$tmp/rorun" 2>/dev/null; then
    out=$(q -o "$tmp/rorun" 2>&1) && die "a read-only OUT_DIR was accepted"
    grep -qi "read-only" <<<"$out" || die "read-only message: $out"
  else
    echo "note: read-only remount refused here; the read-only case was not run"
  fi
  umount "$tmp/rorun"
  q -o "$tmp/rorun" || die "resume after the read-only error"
  cmp -s "$tmp/ref/blocks/block-0023.qsh" "$tmp/rorun/blocks/block-0023.qsh" || die "block 23 differs after the read-only error"
  "$bin" verify "$tmp/rorun" >/dev/null || die "verify after the read-only error"
else
  echo "note: bind mounts are not allowed here; the read-only case was not run"
fi
"$bin" inspect "$tmp/ref" --json | python3 -c 'import json,sys; d=json.load(sys.stdin); assert len(d["blocks"])==24' 2>/dev/null \
  || "$bin" inspect "$tmp/ref" --json | grep -q '"n_blocks": 24' || die "inspect --json"
"$bin" inspect "$tmp/ref" --block 3 | grep -q "mlp.down_proj.codes" || die "inspect --block"
# dump: a dequantized linear (tiny shape: down_proj is [256, 688]) as .npy, a norm as safetensors
"$bin" dump "$tmp/ref" --block 5 --tensor mlp.down_proj -o "$tmp/down.npy" 2>/dev/null || die "dump of a linear"
size=$(stat -c %s "$tmp/down.npy" 2>/dev/null || echo 0); hdr=$((size - 256 * 688 * 4))
[ $hdr -eq 64 ] || [ $hdr -eq 128 ] || die "dump .npy has $size bytes"
"$bin" dump "$tmp/ref" --block 5 --tensor input_layernorm.weight -o "$tmp/norm.safetensors" 2>/dev/null || die "dump of a norm"
"$bin" dump "$tmp/ref" --block 99 --tensor mlp.up_proj -o "$tmp/x.npy" 2>/dev/null && die "dump of a missing block"
[ $fail -eq 0 ] && echo ok
exit $fail
