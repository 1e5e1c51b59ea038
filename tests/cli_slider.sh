#!/usr/bin/env bash
# SliderQuant (--method slider) through the pipeline, on stories260k (5 blocks: the windows
# [0] [0,1] [0,1,2] [0..3] [1..4] [2..4] [3,4] [4]) with seeded random calibration ids:
# 1. W3 g32: verify passes, every block's last window lowered its loss (manifest train_loss),
#    the fingerprint names slider with its lr, clipping lr and epochs, the codes differ from
#    RTN's, the block reconstruction error of the result is below RTN's on the same data
#    (eval on held-out ids: perplexity below RTN's), and the carried parameters are gone at
#    the end.
# 2. kill -9 at random moments, then resume: the shards end byte-identical to an uninterrupted
#    run (the parameters carried across windows come back from acts/slider-WWWW.qsh); so do a
#    run whose states spill to disk and one on cpu-fenced; a finished run with a shard removed
#    (its carried parameters pruned) starts over, says so, and ends identical too.
#    The run is incremental (--incremental on: a first pass over all windows with half of each
#    weight's columns quantized, its parameters in acts/slider-p1-*, then the second): the kills
#    land in either pass.
# 3. --smooth off (no smoothing scales): a run of its own, other shards, smooth_lr 0 in the
#    fingerprint; resuming the smoothed run with it is refused. --incremental off: one pass,
#    other shards, incremental false.
# 4. Refusals: --cr on, --blocks-per-group, no calibration data, a changed --lr on resume,
#    --smooth with another method.
set -u
bin=${QS_BIN:?run through ctest}
shared=${QS_SHARED:?}
tmp=${QS_TMP:-/tmp}/cli_slider
rm -rf "$tmp"; mkdir -p "$tmp"
fail=0
die() { echo "FAIL: $*"; fail=1; }
source "$(dirname "$0")/lib/kill-resume.sh"
st=$shared/models/stories260k
args=(quantize "$st" --method slider --wbits 3 --group 32 --calib random --nsamples 8 --seqlen 64 --epochs 6 --lr 1e-3 --quiet
      --incremental on)
e() { "$bin" "${args[@]}" "$@"; }
same() { for b in 0 1 2 3 4; do cmp -s "$1/blocks/block-000$b.qsh" "$2/blocks/block-000$b.qsh" || return 1; done; }

t0=$(date +%s%N); e -o "$tmp/ref" || die "reference run"; t1=$(date +%s%N)
"$bin" verify "$tmp/ref" >/dev/null || die "verify"
ls "$tmp/ref/acts/"slider-*.qsh >/dev/null 2>&1 && die "carried or first-pass parameters left after the run"
python3 - "$tmp/ref/manifest.json" <<'PY' || die "training did not lower the loss"
import json, sys
m = json.load(open(sys.argv[1]))
meth = m["fingerprint"]["method"]
assert meth["name"] == "slider" and meth["epochs"] == 6 and abs(meth["lr"] - 1e-3) < 1e-12, meth
assert abs(meth["clip_lr"] - 1e-1) < 1e-9 and meth["clip_init"] == 4, meth
assert abs(meth["smooth_lr"] - 1e-2) < 1e-9, meth  # the smoothing scales, on by default
assert meth["incremental"] is True, meth            # the two passes asked for
ok = 0
for b in m["blocks"]:
    l = b["metrics"]["train_loss"]
    print("block %d: last window's loss %.6g -> %.6g" % (b["block"], l["first_epoch"], l["last_epoch"]))
    ok += l["last_epoch"] < l["first_epoch"]
sys.exit(0 if ok == len(m["blocks"]) == 5 else 1)
PY
"$bin" inspect "$tmp/ref" --block 1 | grep -q '"method":"slider"' || die "inspect does not show the method"
"$bin" "${args[@]/--quiet/--json-progress}" -o "$tmp/json" 2>"$tmp/json.txt" >/dev/null || die "--json-progress run"
python3 - "$tmp/json.txt" <<'PY' || die "the JSON progress does not report both passes' 5 blocks in order"
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
got = [(r["pass"], r["block"]) for r in rows]
sys.exit(0 if got == [(p, b) for p in (1, 2) for b in range(5)] else 1)
PY
"$bin" quantize "$st" -o "$tmp/rtn" --method rtn --wbits 3 --group 32 --quiet || die "rtn run"
cmp -s "$tmp/ref/blocks/block-0002.qsh" "$tmp/rtn/blocks/block-0002.qsh" && die "SliderQuant stored RTN's block"
x=11; ids=""
for i in $(seq 400); do x=$(( (x * 1103515245 + 12345) % 2147483648 )); ids="$ids $(( (x >> 16) % 512 ))"; done
echo "$ids" > "$tmp/ids.txt"
p_sl=$("$bin" eval "$tmp/ref" --ids-file "$tmp/ids.txt" --seqlen 64 | awk '/^ppl/{print $2}')
p_rtn=$("$bin" eval "$tmp/rtn" --ids-file "$tmp/ids.txt" --seqlen 64 | awk '/^ppl/{print $2}')
echo "perplexity on held-out random ids: rtn $p_rtn, slider $p_sl"
awk -v a="$p_sl" -v b="$p_rtn" 'BEGIN{exit !(a > 0 && a < b)}' || die "slider ($p_sl) is not below rtn ($p_rtn)"

run_ms=$(( (t1 - t0) / 1000000 )); [ $run_ms -lt 50 ] && run_ms=50
kill_resume 10 "$run_ms" 5 "$tmp/killed" "$bin" "${args[@]}" -o "$tmp/killed"
echo "kills mid-run: $mid of $runs"
[ $mid -ge 2 ] || die "only $mid kills landed mid-run"
e -o "$tmp/killed" || die "final resume"
same "$tmp/ref" "$tmp/killed" || die "killed and resumed run differs from the uninterrupted one"
# kills in the first pass (nothing recorded yet, some blocks' first-pass parameters on disk)
p1mid=0
for i in $(seq 1 24); do
  [ $p1mid -ge 2 ] && break
  "$bin" "${args[@]}" -o "$tmp/p1" 2>/dev/null &
  pid=$!
  sleep "$(awk -v ms="$run_ms" -v s=$RANDOM 'BEGIN{srand(s); printf "%.3f", rand()*ms/2000}')"
  kill -9 $pid 2>/dev/null; wait $pid 2>/dev/null
  n1=$(ls "$tmp/p1/acts/"slider-p1-block-*.qsh 2>/dev/null | wc -l)
  nm=$(grep -c '"block":' "$tmp/p1/manifest.json" 2>/dev/null); nm=${nm:-0}
  [ "$nm" -eq 0 ] && [ "$n1" -ge 1 ] && [ "$n1" -lt 5 ] && p1mid=$((p1mid + 1))
  [ "$nm" -eq 5 ] && rm -rf "$tmp/p1"
done
echo "kills mid first pass: $p1mid"
[ $p1mid -ge 1 ] || die "no kill landed in the first pass"
e -o "$tmp/p1" || die "resume after kills in the first pass"
same "$tmp/ref" "$tmp/p1" || die "a run killed in its first pass and resumed differs from the uninterrupted one"
e -o "$tmp/spill" --spill || die "spilled run"
same "$tmp/ref" "$tmp/spill" || die "spilled run differs"
e -o "$tmp/fenced" --device cpu-fenced || die "cpu-fenced run"
same "$tmp/ref" "$tmp/fenced" || die "cpu-fenced run differs from cpu"
cp -r "$tmp/ref" "$tmp/gone"; rm "$tmp/gone/blocks/block-0003.qsh"
out=$("$bin" "${args[@]/--quiet/--progress-lines}" -o "$tmp/gone" 2>&1) || die "resume after a removed shard: $out"
grep -q "starting over" <<<"$out" || die "no notice that the run starts over: $out"
same "$tmp/ref" "$tmp/gone" || die "the run started over differs"

# variant DIR FLAG VALUE CHECK: a run with FLAG VALUE into DIR, verified, with other shards than
# the defaults' and the fingerprint's method passing the Python test CHECK (on m)
variant() {
  e -o "$1" "$2" "$3" || die "$2 $3 run"
  "$bin" verify "$1" >/dev/null || die "verify $2 $3"
  same "$tmp/ref" "$1" && die "$2 $3 stored the default run's shards"
  python3 -c "import json,sys; m=json.load(open(sys.argv[1]))['fingerprint']['method']; sys.exit(not ($4))" \
    "$1/manifest.json" || die "$2 $3: the fingerprint fails $4"
  echo "perplexity on held-out random ids: slider $2 $3 $("$bin" eval "$1" --ids-file "$tmp/ids.txt" --seqlen 64 | awk '/^ppl/{print $2}')"
}
variant "$tmp/plain" --smooth off 'm["smooth_lr"] == 0'
variant "$tmp/one" --incremental off 'm["incremental"] is False'
out=$(e -o "$tmp/ref" --smooth off 2>&1) && die "--smooth off accepted on resuming a smoothed run"
grep -q "smooth" <<<"$out" || die "message does not name smooth: $out"
out=$("$bin" quantize "$st" -o "$tmp/bad" --method rtn --wbits 3 --smooth on 2>&1) && die "--smooth accepted for rtn"
grep -q "SliderQuant" <<<"$out" || die "message: $out"
out=$(e -o "$tmp/bad" --cr on 2>&1) && die "--cr on accepted"
grep -q "QLLM" <<<"$out" || die "message: $out"
out=$(e -o "$tmp/bad" --blocks-per-group 2 2>&1) && die "--blocks-per-group accepted"
grep -q "windows" <<<"$out" || die "message: $out"
out=$("$bin" quantize "$st" -o "$tmp/bad" --method slider --wbits 3 2>&1) && die "no calibration accepted"
grep -q "needs calibration data" <<<"$out" || die "message: $out"
[ -e "$tmp/bad/manifest.json" ] && die "a refused run wrote a manifest"
out=$(e -o "$tmp/ref" --lr 2e-3 2>&1) && die "changed --lr accepted on resume"
grep -q "lr" <<<"$out" || die "message does not name lr: $out"
[ $fail -eq 0 ] && echo ok
exit $fail
