#!/usr/bin/env bash
# qstream export: the gptq layout checked by an independent unpacker written from the format's
# description (tests/tools/check_gptq_export.py, standard library only) against `qstream dump`,
# for 2, 3, 4 and 8 bits, symmetric and asymmetric, per group (also a partial last group) and
# per channel, and GPTQ with act-order (g_idx, desc_act); fakequant evaluates to exactly the
# perplexity of the run it came from; bad requests are one-line errors that leave nothing behind
# and never touch an existing directory's files.
set -u
bin=${QS_BIN:?run through ctest}
src=${QS_SRC:?}
shared=${QS_SHARED:?}
smol=${QS_SMOLLM_DIR:?}
gen=$(dirname "$bin")/bench/gen_model
tmp=${QS_TMP:-/tmp}/cli_export
rm -rf "$tmp"; mkdir -p "$tmp"
fail=0
die() { echo "FAIL: $*"; fail=1; }
. "$src/tests/lib/cli-check.sh"
[ -f "$smol/config.json" ] || { echo "FAIL: $smol has no model (scripts/fetch-default-model.sh)"; exit 1; }
st=$shared/models/stories260k
. "$src/tests/lib/dump-blocks.sh"
gone() { [ -e "$1" ] && die "$2 left $1 behind"; }
"$gen" "$tmp/tiny" --shape tiny --layers 2 --dtype bf16 >/dev/null || { echo "FAIL: gen_model"; exit 1; }
# MODEL|quantize args|export args|blocks to check. stories260k (intermediate 172) packs only at
# 8 bits; group 32 leaves its down_proj a last group of 12 columns.
i=0
while IFS='|' read -r model qargs eargs blocks <&3; do
  i=$((i + 1))
  case $model in tiny) m=$tmp/tiny ;; stories) m=$st ;; esac
  # shellcheck disable=SC2086
  "$bin" quantize "$m" -o "$tmp/q$i" $qargs --quiet || { die "quantize $i ($qargs)"; continue; }
  # shellcheck disable=SC2086
  "$bin" export "$tmp/q$i" --format gptq $eargs -o "$tmp/hf$i" 2>/dev/null || { die "export $i ($qargs | $eargs)"; continue; }
  # shellcheck disable=SC2086
  dump_blocks "$tmp/q$i" "$tmp/d$i" $blocks
  # shellcheck disable=SC2086
  python3 "$src/tests/tools/check_gptq_export.py" "$tmp/hf$i" "$tmp/d$i" $blocks || die "gptq layout $i ($model $qargs | $eargs)"
done 3<<'CASES'
tiny|--method rtn --wbits 4 --group 64 --sym||0 1
tiny|--method rtn --wbits 8 --group -1 --sym||0 1
tiny|--method rtn --wbits 2 --group 64|--gptq-v2|0 1
tiny|--method gptq --wbits 4 --group 64 --sym --act-order --calib random --nsamples 4 --seqlen 64||0 1
stories|--method rtn --wbits 8 --group 32 --sym||0 1 2 3 4
stories|--method rtn --wbits 8 --group -1||0 4
tiny|--method dlqat --wbits 4 --group 64 --sym --calib random --nsamples 4 --seqlen 64 --epochs 2||0 1
CASES
grep -q '"desc_act": true' "$tmp/hf4/config.json" || die "act-order export does not say desc_act"
grep -q '"desc_act": false' "$tmp/hf1/config.json" || die "in-order export says desc_act"
grep -q '"group_size": -1' "$tmp/hf6/quantize_config.json" || die "per-channel export lacks group_size -1"
# asymmetric min-max groups of 32 on stories260k: a group whose weights are all on one side of
# zero has its zero point outside the code range; the export is exact or refuses naming it
"$bin" quantize "$st" -o "$tmp/sa" --method rtn --wbits 8 --group 32 --quiet || die "quantize stories W8 g32 asym"
if "$bin" export "$tmp/sa" --format gptq -o "$tmp/sa_hf" 2>"$tmp/sa.err"; then
  dump_blocks "$tmp/sa" "$tmp/dsa" 0 4
  python3 "$src/tests/tools/check_gptq_export.py" "$tmp/sa_hf" "$tmp/dsa" 0 4 || die "stories W8 g32 asym layout"
else
  echo "stories260k W8 g32 asym refused: $(cat "$tmp/sa.err")"
  [ "$(wc -l <"$tmp/sa.err")" -eq 1 ] || die "the refusal is not one line"
  grep -qE "block [0-9]+ [a-z_.]+_proj: zero point -?[0-9]+ \(row [0-9]+, group [0-9]+, codes [0-9]+\.\.[0-9]+\) cannot be stored.*--sym" \
    "$tmp/sa.err" || die "the refusal does not name block, linear, row and group"
  gone "$tmp/sa_hf" "a refused export"
fi
# 3 bits on the real model: v1 cannot hold its zero points of 0 (a clear error naming block,
# linear and row; nothing written, and an empty directory made beforehand is kept as it was);
# gptq_v2 holds everything
"$bin" quantize "$smol" -o "$tmp/s3" --method rtn --wbits 3 --group 128 --quiet || die "quantize SmolLM2 W3"
check "v1 refuses a zero point of 0" 1 "block [0-9]+ .*_proj: zero point 0 \(row [0-9]+, group [0-9]+, codes 0\.\.7\).*gptq-v2" -- \
  "$bin" export "$tmp/s3" --format gptq -o "$tmp/s3v1"
gone "$tmp/s3v1" "a refused export"
mkdir "$tmp/s3empty"
check "v1 refusal into an empty directory" 1 "zero point 0" -- "$bin" export "$tmp/s3" --format gptq -o "$tmp/s3empty"
[ -d "$tmp/s3empty" ] && [ -z "$(ls -A "$tmp/s3empty")" ] || die "a refused export changed the empty directory it was given"
"$bin" export "$tmp/s3" --format gptq --gptq-v2 -o "$tmp/s3v2" 2>/dev/null || die "export SmolLM2 W3 v2"
dump_blocks "$tmp/s3" "$tmp/ds3" 0 29
python3 "$src/tests/tools/check_gptq_export.py" "$tmp/s3v2" "$tmp/ds3" 0 29 || die "SmolLM2 W3 gptq_v2 layout"
[ -f "$tmp/s3v2/tokenizer.json" ] || die "gptq export lacks tokenizer.json"
# fakequant: the same perplexity bits as the run itself
ids="1 67 89 120 300 45 7 260 511 2 33 400 150 99 12 88 17 230 41 5 66 300 2 9 14 77 310 120 500 3 8 91"
for k in 1 2 3; do echo "$ids"; done > "$tmp/ids.txt"
ppl() { "$bin" eval "$1" --ids-file "$tmp/ids.txt" --seqlen 32 --json | sed -E 's/.*"ppl": ([0-9.]+).*/\1/'; }
"$bin" quantize "$st" -o "$tmp/st" --method rtn --wbits 3 --group 32 --quiet || die "quantize stories"
"$bin" export "$tmp/st" --format fakequant -o "$tmp/stfq" 2>/dev/null || die "fakequant export"
a=$(ppl "$tmp/st"); b=$(ppl "$tmp/stfq")
echo "stories260k W3 g32: ppl from the shards $a, from the fakequant export $b"
[ -n "$a" ] && [ "$a" = "$b" ] || die "fakequant perplexity $b differs from the run's $a"
grep -q quantization_config "$tmp/stfq/config.json" && die "fakequant config.json has quantization_config"
"$bin" export "$tmp/st" --format fakequant --dtype bf16 -o "$tmp/stbf" 2>/dev/null || die "fakequant bf16 export"
grep -q '"torch_dtype": "bfloat16"' "$tmp/stbf/config.json" || die "bf16 fakequant config lacks torch_dtype bfloat16"
c=$(ppl "$tmp/stbf")
echo "stories260k W3 g32: ppl from the bf16 fakequant export $c"
[ -n "$c" ] || die "bf16 fakequant export does not evaluate"
# activation quantization: gptq refuses (weight-only), fakequant exports the weights and warns
"$bin" quantize "$tmp/tiny" -o "$tmp/wa" --method rtn --wbits 4 --group 64 --abits 8 --quiet || die "quantize W4A8"
check "gptq of a W4A8 run" 1 "weight-only" -- "$bin" export "$tmp/wa" --format gptq -o "$tmp/wa_hf"
gone "$tmp/wa_hf" "refused export of a W4A8 run"
check "fakequant of a W4A8 run warns" 0 "warning: .*W4A8.*activation quantization is not part" -- \
  "$bin" export "$tmp/wa" --format fakequant -o "$tmp/wa_fq"
# bad requests
check "stories260k W3 does not pack" 1 "mlp.gate_proj \[172, 64\] does not pack into 32-bit words at 3 bits" -- \
  "$bin" export "$tmp/st" --format gptq -o "$tmp/st_w3"
gone "$tmp/st_w3" "refused export"
cp -r "$tmp/q1" "$tmp/part"; rm "$tmp/part/blocks/block-0001.qsh"
python3 - "$tmp/part/manifest.json" <<'PY'
import json, sys
p = sys.argv[1]; m = json.load(open(p)); m["blocks"] = [b for b in m["blocks"] if b["block"] != 1]; json.dump(m, open(p, "w"))
PY
check "export of an unfinished run" 1 "not finished" -- "$bin" export "$tmp/part" --format gptq -o "$tmp/part_hf"
gone "$tmp/part_hf" "export of an unfinished run"
sums=$(cd "$tmp/hf1" && md5sum ./*)
check "export into a non-empty directory" 1 "not empty.*--force" -- "$bin" export "$tmp/q1" --format fakequant -o "$tmp/hf1"
[ "$(cd "$tmp/hf1" && md5sum ./*)" = "$sums" ] || die "a refused export changed the existing directory's files"
"$bin" export "$tmp/q1" --format fakequant --force -o "$tmp/hf1" 2>/dev/null || die "--force export"
[ -e "$tmp/hf1/quantize_config.json" ] && die "--force fakequant over a gptq export left its quantize_config.json"
check "export into the run itself" 1 "run's own directory" -- "$bin" export "$tmp/q1" --format fakequant --force -o "$tmp/q1/"
"$bin" eval "$tmp/q1" --ids-file "$tmp/ids.txt" --seqlen 32 >/dev/null 2>&1 || die "the refused export into the run damaged it"
check "unknown format" 1 "gptq, fakequant or gguf" -- "$bin" export "$tmp/q1" --format ggml -o "$tmp/x"
gone "$tmp/x" "unknown format"
[ "$("$bin" export "$tmp/part" --format gptq -o "$tmp/x" 2>&1 | wc -l)" -eq 1 ] || die "an export error is not one line"
[ $fail -eq 0 ] && echo ok
exit $fail
