#!/usr/bin/env bash
# GPTQ through the pipeline, and evaluation of quantized runs from their shards.
# 1. SmolLM2-135M, W3A16 g128, calibrated on 16 x 256 tokens of wikitext2-valid: perplexity on the
#    first 4 windows of 512 tokens of wikitext2-test must order FP < GPTQ < RTN (GPTQ's whole point;
#    at 3 bits the RTN gap is tens of percent, far outside calibration noise).
# 2. stories260k, GPTQ with --calib random: kill -9 at random moments and resume (the finished
#    blocks are replayed from their shards) ends byte-identical to an uninterrupted run.
# 3. A different calibration set is refused with what differs; W4A8 RTN evaluates with its
#    activation quantization (perplexity differs from W4A16).
set -u
bin=${QS_BIN:?run through ctest}
shared=${QS_SHARED:?}
smol=${QS_SMOLLM_DIR:?}
tmp=${QS_TMP:-/tmp}/cli_gptq
rm -rf "$tmp"; mkdir -p "$tmp"
fail=0
die() { echo "FAIL: $*"; fail=1; }
source "$(dirname "$0")/lib/kill-resume.sh"
[ -f "$smol/config.json" ] || { echo "FAIL: $smol has no model (scripts/fetch-default-model.sh)"; exit 1; }
test_txt=$shared/data/wikitext2-test.raw.txt
valid_txt=$shared/data/wikitext2-valid.tokens.txt
head -c 60000 "$test_txt" > "$tmp/test.txt"
ppl() { "$bin" eval "$1" --text "$tmp/test.txt" --seqlen 512 --max-windows 4 --json | sed -E 's/.*"ppl": ([0-9.]+).*/\1/'; }

"$bin" quantize "$smol" -o "$tmp/rtn3" --method rtn --wbits 3 --group 128 --quiet || die "rtn W3"
"$bin" quantize "$smol" -o "$tmp/gptq3" --method gptq --wbits 3 --group 128 --calib "$valid_txt" \
  --nsamples 16 --seqlen 256 --quiet || die "gptq W3"
fp=$(ppl "$smol"); rtn=$(ppl "$tmp/rtn3"); gptq=$(ppl "$tmp/gptq3")
echo "SmolLM2 W3A16 g128, 4 x 512 tokens: FP $fp, RTN $rtn, GPTQ $gptq"
awk -v f="$fp" -v r="$rtn" -v g="$gptq" 'BEGIN{exit !(f > 1 && f < g && g < r)}' || die "expected FP < GPTQ < RTN"
"$bin" verify "$tmp/gptq3" >/dev/null || die "verify gptq run"
"$bin" inspect "$tmp/gptq3" --block 2 | grep -q "gptq" || die "inspect does not show the method"

# kill -9 and resume, stories260k (5 blocks), random calibration ids
st=$shared/models/stories260k
g() { "$bin" quantize "$st" --method gptq --wbits 4 --group 32 --calib random --nsamples 8 --seqlen 128 --quiet "$@"; }
t0=$(date +%s%N); g -o "$tmp/ref" || die "reference gptq run"; t1=$(date +%s%N)
run_ms=$(( (t1 - t0) / 1000000 )); [ $run_ms -lt 50 ] && run_ms=50
kill_resume 20 "$run_ms" 5 "$tmp/killed" "$bin" quantize "$st" --method gptq --wbits 4 --group 32 --calib random \
  --nsamples 8 --seqlen 128 --quiet -o "$tmp/killed"
echo "activation checkpoints damaged before a resume: $damaged"
[ $damaged -ge 1 ] || die "no activation checkpoint was there to damage"
out=$(g -o "$tmp/ckpt" 2>&1; rm -rf "$tmp/ckpt/blocks/block-0004.qsh"; g -o "$tmp/ckpt" --progress-lines 2>&1)
grep -q "replayed 4 finished blocks" <<<"$out" || die "resume without a checkpoint does not replay: $out"
echo "kills that landed mid-run: $mid of $runs"
[ $mid -ge 3 ] || die "only $mid kills landed mid-run"
g -o "$tmp/killed" || die "final resume"
for f in "$tmp/ref/blocks/"*.qsh; do
  cmp -s "$f" "$tmp/killed/blocks/$(basename "$f")" || die "$(basename "$f") differs after kill/resume"
done
# a run that dies at block 3 (a NaN weight there) with a checkpoint after every second block,
# written in parts of 3 windows (of 8): blocks 0-2 are kept, the resume (the weight mended) loads
# the states after block 1 and replays block 2 only, and ends byte-identical to the reference;
# with one part of that checkpoint damaged the resume replays blocks 0-2 instead, to the same bytes
cp -r "$st" "$tmp/nan-model"
python3 - "$tmp/nan-model/model.safetensors" <<'PY' || die "could not patch the model"
import json, struct, sys
f = open(sys.argv[1], "r+b"); n = struct.unpack("<Q", f.read(8))[0]; h = json.loads(f.read(n))
o = 8 + n + h["model.layers.3.mlp.up_proj.weight"]["data_offsets"][0] + 4 * 100
f.seek(o); keep = f.read(4); open(sys.argv[1] + ".keep", "wb").write(struct.pack("<Q", o) + keep)
f.seek(o); f.write(struct.pack("<f", float("nan")))
PY
gn() { QS_ACT_CKPT_PART_BYTES=100000 "$bin" quantize "$tmp/nan-model" --method gptq --wbits 4 --group 32 --calib random --nsamples 8 --seqlen 128 \
         --act-checkpoints 2 -o "$tmp/died" "$@"; }
out=$(gn --quiet 2>&1) && die "a NaN weight was accepted"
grep -q "up_proj.weight: weight \[.*\] is NaN" <<<"$out" || die "the NaN weight is not named: $out"
python3 - "$tmp/nan-model/model.safetensors" <<'PY'
import struct, sys
k = open(sys.argv[1] + ".keep", "rb").read(); f = open(sys.argv[1], "r+b"); f.seek(struct.unpack("<Q", k[:8])[0]); f.write(k[8:])
PY
kept=$(python3 -c 'import json,sys; print(len(json.load(open(sys.argv[1]))["blocks"]))' "$tmp/died/manifest.json")
echo "the run that died at block 3 kept $kept blocks; checkpoints: $(ls "$tmp/died/acts" 2>/dev/null | tr '\n' ' ')"
[ -s "$tmp/died/acts/acts-0001-0002.qsh" ] || die "the checkpoint after block 1 is not in 3 parts"
cp -r "$tmp/died" "$tmp/died2"
out=$(gn --progress-lines 2>&1) || die "resume after the death: $out"
if [ "$kept" = 3 ]; then
  grep -q "resumed the calibration states from the checkpoint after block 1 (acts/acts-0001-\*.qsh, 3 parts)" <<<"$out" ||
    die "the resume did not load block 1's states: $out"
  grep -q "replayed 1 finished blocks" <<<"$out" || die "the resume did not replay block 2 only: $out"
fi
printf '\x55' | dd of="$tmp/died2/acts/acts-0001-0001.qsh" bs=1 seek=5000 conv=notrunc status=none
out=$(QS_ACT_CKPT_PART_BYTES=100000 "$bin" quantize "$tmp/nan-model" --method gptq --wbits 4 --group 32 --calib random \
  --nsamples 8 --seqlen 128 --act-checkpoints 2 -o "$tmp/died2" --progress-lines 2>&1) || die "resume with a damaged part: $out"
grep -q "replayed $kept finished blocks" <<<"$out" || die "a damaged part did not make the resume replay every block: $out"
for f in "$tmp/ref/blocks/"*.qsh; do
  cmp -s "$f" "$tmp/died2/blocks/$(basename "$f")" || die "$(basename "$f") differs after a damaged part's full replay"
done
grep -q "activation checkpoints: 1 written" <<<"$out" || die "the resumed run should write one checkpoint (after its second block, 4): $out"
[ -e "$tmp/died/acts" ] && [ -n "$(ls "$tmp/died/acts")" ] && die "checkpoints left after the run finished"
for f in "$tmp/ref/blocks/"*.qsh; do
  cmp -s "$f" "$tmp/died/blocks/$(basename "$f")" || die "$(basename "$f") differs after the partial replay"
done
# damaged middle block: resume recomputes it (replaying blocks 0-1) to the same bytes
cp -r "$tmp/ref" "$tmp/damaged"
printf '\x55' | dd of="$tmp/damaged/blocks/block-0002.qsh" bs=1 seek=5000 conv=notrunc status=none
g -o "$tmp/damaged" || die "resume of a damaged gptq run"
for f in "$tmp/ref/blocks/"*.qsh; do
  cmp -s "$f" "$tmp/damaged/blocks/$(basename "$f")" || die "$(basename "$f") differs after repair"
done
# calibration states spilled to disk (read back through io_uring): the same bytes
out=$(g -o "$tmp/spill" --spill --progress-lines 2>&1) || die "spilled run: $out"
grep -q "spill" <<<"$out" || die "the spilled run does not say so: $out"
for f in "$tmp/ref/blocks/"*.qsh; do
  cmp -s "$f" "$tmp/spill/blocks/$(basename "$f")" || die "$(basename "$f") differs when the states spill"
done
[ -e "$tmp/spill/acts/spill.f32" ] && die "spill file left behind"
# --gpu-mem: a budget for one window per call gives the same bytes; below one window it is refused
g -o "$tmp/gpumem" --gpu-mem 950K || die "--gpu-mem 950K run"
for f in "$tmp/ref/blocks/"*.qsh; do
  cmp -s "$f" "$tmp/gpumem/blocks/$(basename "$f")" || die "$(basename "$f") differs under --gpu-mem"
done
out=$(g -o "$tmp/gpusmall" --gpu-mem 100K 2>&1) && die "--gpu-mem 100K accepted"
grep -q "cannot hold one block" <<<"$out" || die "--gpu-mem message: $out"
[ -e "$tmp/gpusmall" ] && die "--gpu-mem refusal left $tmp/gpusmall behind"
out=$(g -o "$tmp/ref" --seed 7 2>&1) && die "a different calibration set was accepted"
grep -q "calibration" <<<"$out" || die "mismatch message does not name the calibration: $out"
out=$("$bin" quantize "$st" -o "$tmp/nocal" --method gptq --wbits 4 2>&1) && die "gptq without calibration accepted"

# weight-activation: W4A8 evaluates with activation quantization
ids="1 67 89 120 300 45 7 260 511 2 33 400 150 99 12 88 17 230 41 5 66 300 2 9 14 77 310 120 500 3 8 91"
for i in 1 2 3 4; do echo "$ids"; done > "$tmp/ids.txt"
"$bin" quantize "$st" -o "$tmp/w4a16" --method rtn --wbits 4 --group 32 --quiet || die "w4a16"
"$bin" quantize "$st" -o "$tmp/w4a8" --method rtn --wbits 4 --group 32 --abits 8 --quiet || die "w4a8"
"$bin" quantize "$st" -o "$tmp/w4a4" --method rtn --wbits 4 --group 32 --abits 4 --quiet || die "w4a4"
e() { "$bin" eval "$1" --ids-file "$tmp/ids.txt" --seqlen 32 --json | sed -E 's/.*"ppl": ([0-9.]+).*/\1/'; }
a16=$(e "$tmp/w4a16"); a8=$(e "$tmp/w4a8"); a4=$(e "$tmp/w4a4"); f=$(e "$st")
echo "stories260k: FP $f, W4A16 $a16, W4A8 $a8, W4A4 $a4"
[ "$a16" != "$a8" ] || die "W4A8 evaluates like W4A16: activations not quantized"
awk -v a="$a8" -v b="$a4" 'BEGIN{exit !(b > a)}' || die "W4A4 should be worse than W4A8"
mkdir -p "$tmp/part" && cp -r "$tmp/w4a8/." "$tmp/part" && rm "$tmp/part/blocks/block-0004.qsh"
python3 - "$tmp/part/manifest.json" <<'PY' || die "could not edit the manifest"
import json, sys
p = sys.argv[1]; m = json.load(open(p)); m["blocks"] = [b for b in m["blocks"] if b["block"] != 4]
json.dump(m, open(p, "w"))
PY
out=$("$bin" eval "$tmp/part" --ids-file "$tmp/ids.txt" --seqlen 32 2>&1) && die "eval of an unfinished run"
grep -q "not finished" <<<"$out" || die "unfinished-run message: $out"
[ $fail -eq 0 ] && echo ok
exit $fail
