#!/usr/bin/env bash
# QLLM efficient error correction through the pipeline, on stories260k (5 blocks) with seeded
# random calibration ids (fast; the perplexity claims are in cli_qllm.sh on SmolLM2):
# 1. CR + EEC W4A4 in groups of K = 2 blocks (units 0-1, 2-3, 4): the training lowers the
#    reconstruction loss (manifest eec_loss, last epoch below the first) in every group.
# 2. kill -9 at random moments, then resume (every third time with the activation checkpoint
#    damaged, so that both calibration paths are replayed from shards and source weights): the
#    shards end byte-identical to an uninterrupted run; so does a run whose states spill to disk.
# 3. The merged training form with K = 1: a replayed resume is byte-identical; the two forms
#    give different weights.
# 4. Refusals: groups without EEC, a --gpu-mem below one group's training, a changed --epochs.
set -u
bin=${QS_BIN:?run through ctest}
shared=${QS_SHARED:?}
tmp=${QS_TMP:-/tmp}/cli_eec
rm -rf "$tmp"; mkdir -p "$tmp"
fail=0
die() { echo "FAIL: $*"; fail=1; }
source "$(dirname "$0")/lib/kill-resume.sh"
st=$shared/models/stories260k
args=(quantize "$st" --method qllm --wbits 4 --group -1 --abits 4 --calib random --nsamples 8 --seqlen 64
      --cr-tokens 128 --cr-candidates 6 --epochs 4 --lr 1e-3 --quiet)
e() { "$bin" "${args[@]}" "$@"; }
same() { for b in 0 1 2 3 4; do cmp -s "$1/blocks/block-000$b.qsh" "$2/blocks/block-000$b.qsh" || return 1; done; }

t0=$(date +%s%N); e -o "$tmp/ref" --blocks-per-group 2 || die "reference run"; t1=$(date +%s%N)
"$bin" verify "$tmp/ref" >/dev/null || die "verify"
python3 - "$tmp/ref/manifest.json" <<'PY' || die "training did not lower the loss"
import json, sys
m = json.load(open(sys.argv[1]))
ok = 0
for b in m["blocks"]:
    l = b["metrics"]["eec_loss"]
    print("block %d: eec loss %.6g -> %.6g" % (b["block"], l["first_epoch"], l["last_epoch"]))
    ok += l["last_epoch"] < l["first_epoch"]
sys.exit(0 if ok == len(m["blocks"]) == 5 else 1)
PY
"$bin" inspect "$tmp/ref" --block 1 | grep -q '"blocks_per_group":2' || die "inspect does not show the group size"
"$bin" inspect "$tmp/ref" | grep -Eq '^ +4 .* [0-9.e-]+ -> [0-9.e-]+$' || die "inspect does not show block 4's eec loss"

run_ms=$(( (t1 - t0) / 1000000 )); [ $run_ms -lt 50 ] && run_ms=50
kill_resume 12 "$run_ms" 5 "$tmp/killed" "$bin" "${args[@]}" -o "$tmp/killed" --blocks-per-group 2
echo "kills mid-run: $mid of $runs; activation checkpoints damaged: $damaged"
[ $mid -ge 2 ] || die "only $mid kills landed mid-run"
e -o "$tmp/killed" --blocks-per-group 2 || die "final resume"
same "$tmp/ref" "$tmp/killed" || die "killed and resumed run differs from the uninterrupted one"
e -o "$tmp/spill" --blocks-per-group 2 --spill || die "spilled run"
same "$tmp/ref" "$tmp/spill" || die "spilled run differs"

e -o "$tmp/merged" --eec-form merged --blocks-per-group 1 || die "merged form"
cp -r "$tmp/merged" "$tmp/merged2"; rm -rf "$tmp/merged2/blocks/block-0003.qsh" "$tmp/merged2/blocks/block-0004.qsh" "$tmp/merged2/acts"
out=$(e -o "$tmp/merged2" --eec-form merged --blocks-per-group 1 --progress-lines 2>&1) || die "replayed resume: $out"
grep -q "replayed 3 finished blocks" <<<"$out" || die "resume without checkpoint did not replay: $out"
same "$tmp/merged" "$tmp/merged2" || die "replayed resume differs"
e -o "$tmp/paper1" --blocks-per-group 1 || die "paper form K=1"
cmp -s "$tmp/merged/blocks/block-0002.qsh" "$tmp/paper1/blocks/block-0002.qsh" && die "paper and merged forms gave the same block"

out=$(e -o "$tmp/bad" --eec off --blocks-per-group 2 2>&1) && die "groups without EEC accepted"
grep -q "blocks-per-group" <<<"$out" || die "message: $out"
out=$(e -o "$tmp/bad" --blocks-per-group 4 --gpu-mem 2M 2>&1) && die "--gpu-mem 2M accepted for groups of 4"
grep -q "blocks-per-group" <<<"$out" || die "message: $out"
[ -e "$tmp/bad/manifest.json" ] && die "a refused run wrote a manifest"
# without --blocks-per-group the groups shrink to what --gpu-mem holds (4 by default)
out=$(e -o "$tmp/auto" --gpu-mem 2M --progress-lines 2>&1) || die "--gpu-mem 2M with automatic groups: $out"
k=$(grep -Eo '"blocks_per_group": ?[0-9]+' "$tmp/auto/manifest.json" | head -1 | grep -Eo '[0-9]+$')
echo "--gpu-mem 2M: groups of ${k:-?} blocks"
{ [ -n "$k" ] && [ "$k" -ge 1 ] && [ "$k" -lt 4 ]; } || die "automatic group size $k under --gpu-mem 2M"
grep -q "groups of $k" <<<"$out" || die "no note about the smaller groups: $out"
e -o "$tmp/auto4" || die "default groups"
grep -Eq '"blocks_per_group": ?4' "$tmp/auto4/manifest.json" || die "default group size is not 4"
out=$(e -o "$tmp/ref" --blocks-per-group 2 --epochs 5 2>&1) && die "changed --epochs accepted on resume"
grep -q "eec_epochs" <<<"$out" || die "message does not name eec_epochs: $out"
[ $fail -eq 0 ] && echo ok
exit $fail
