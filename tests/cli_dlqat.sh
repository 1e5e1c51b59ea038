#!/usr/bin/env bash
# DL-QAT (--method dlqat) through the pipeline, on stories260k (5 blocks) with seeded random
# calibration ids (fast; the perplexity figures on SmolLM2 are in bench/README.md):
# 1. W3 g32: verify passes, the training lowers each block's reconstruction loss (manifest
#    train_loss, last epoch below the first), inspect shows it and the method's settings, and
#    the fingerprint names dlqat with its rank, lr and epochs; the codes differ from RTN's at the
#    same setting (the grid moved), evaluation runs on the result.
# 2. kill -9 at random moments, then resume (every third time with the activation checkpoint
#    damaged): the shards end byte-identical to an uninterrupted run; so do a run whose states
#    spill to disk, one in groups of 2 blocks resumed after its first group, and one on
#    cpu-fenced (the backend memory the host cannot touch).
# 3. Refusals: --cr on, a run without calibration data, a changed --lr on resume.
set -u
bin=${QS_BIN:?run through ctest}
shared=${QS_SHARED:?}
tmp=${QS_TMP:-/tmp}/cli_dlqat
rm -rf "$tmp"; mkdir -p "$tmp"
fail=0
die() { echo "FAIL: $*"; fail=1; }
source "$(dirname "$0")/lib/kill-resume.sh"
st=$shared/models/stories260k
args=(quantize "$st" --method dlqat --wbits 3 --group 32 --calib random --nsamples 8 --seqlen 64 --epochs 4 --quiet)
e() { "$bin" "${args[@]}" "$@"; }
same() { for b in 0 1 2 3 4; do cmp -s "$1/blocks/block-000$b.qsh" "$2/blocks/block-000$b.qsh" || return 1; done; }

t0=$(date +%s%N); e -o "$tmp/ref" || die "reference run"; t1=$(date +%s%N)
"$bin" verify "$tmp/ref" >/dev/null || die "verify"
python3 - "$tmp/ref/manifest.json" <<'PY' || die "training did not lower the loss"
import json, sys
m = json.load(open(sys.argv[1]))
meth = m["fingerprint"]["method"]
assert meth["name"] == "dlqat" and meth["rank"] == 4 and meth["epochs"] == 4 and abs(meth["lr"] - 1e-2) < 1e-12, meth
ok = 0
for b in m["blocks"]:
    l = b["metrics"]["train_loss"]
    print("block %d: train loss %.6g -> %.6g" % (b["block"], l["first_epoch"], l["last_epoch"]))
    ok += l["last_epoch"] < l["first_epoch"]
sys.exit(0 if ok == len(m["blocks"]) == 5 else 1)
PY
"$bin" inspect "$tmp/ref" --block 1 | grep -q '"method":"dlqat"' || die "inspect does not show the method"
"$bin" inspect "$tmp/ref" | grep -Eq '^ +4 .* [0-9.e-]+ -> [0-9.e-]+$' || die "inspect does not show block 4's train loss"
"$bin" quantize "$st" -o "$tmp/rtn" --method rtn --wbits 3 --group 32 --quiet || die "rtn run"
cmp -s "$tmp/ref/blocks/block-0002.qsh" "$tmp/rtn/blocks/block-0002.qsh" && die "DL-QAT stored RTN's block"
x=7; ids=""
for i in $(seq 200); do x=$(( (x * 1103515245 + 12345) % 2147483648 )); ids="$ids $(( (x >> 16) % 512 ))"; done
echo "$ids" > "$tmp/ids.txt"
"$bin" eval "$tmp/ref" --ids-file "$tmp/ids.txt" --seqlen 64 | grep -Eq '^ppl [0-9.]+ ' || die "eval of the DL-QAT model"

run_ms=$(( (t1 - t0) / 1000000 )); [ $run_ms -lt 50 ] && run_ms=50
kill_resume 12 "$run_ms" 5 "$tmp/killed" "$bin" "${args[@]}" -o "$tmp/killed"
echo "kills mid-run: $mid of $runs; activation checkpoints damaged: $damaged"
[ $mid -ge 2 ] || die "only $mid kills landed mid-run"
e -o "$tmp/killed" || die "final resume"
same "$tmp/ref" "$tmp/killed" || die "killed and resumed run differs from the uninterrupted one"
e -o "$tmp/spill" --spill || die "spilled run"
same "$tmp/ref" "$tmp/spill" || die "spilled run differs"
e -o "$tmp/fenced" --device cpu-fenced || die "cpu-fenced run"
same "$tmp/ref" "$tmp/fenced" || die "cpu-fenced run differs from cpu"
e -o "$tmp/g2" --blocks-per-group 2 || die "groups of 2"
cp -r "$tmp/g2" "$tmp/g2b"; rm -rf "$tmp/g2b/blocks/block-0002.qsh" "$tmp/g2b/blocks/block-0003.qsh" "$tmp/g2b/blocks/block-0004.qsh"
e -o "$tmp/g2b" --blocks-per-group 2 || die "groups of 2, resumed"
same "$tmp/g2" "$tmp/g2b" || die "groups of 2: the resumed run differs"
cmp -s "$tmp/g2/blocks/block-0001.qsh" "$tmp/ref/blocks/block-0001.qsh" && die "groups of 2 gave block 1 of groups of 1"

out=$(e -o "$tmp/bad" --cr on 2>&1) && die "--cr on accepted"
grep -q "QLLM" <<<"$out" || die "message: $out"
out=$("$bin" quantize "$st" -o "$tmp/bad" --method dlqat --wbits 3 2>&1) && die "no calibration accepted"
grep -q "needs calibration data" <<<"$out" || die "message: $out"
[ -e "$tmp/bad/manifest.json" ] && die "a refused run wrote a manifest"
out=$(e -o "$tmp/ref" --lr 2e-3 2>&1) && die "changed --lr accepted on resume"
grep -q "lr" <<<"$out" || die "message does not name lr: $out"
[ $fail -eq 0 ] && echo ok
exit $fail
