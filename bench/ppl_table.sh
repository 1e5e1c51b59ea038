#!/usr/bin/env bash
# Perplexity table for issue-style reports: FP, RTN and GPTQ on one model at the standard
# settings, calibrated on ../shared/data/wikitext2-valid and evaluated on wikitext2-test.
#   bench/ppl_table.sh BIN MODEL_DIR OUT_ROOT [NSAMPLES SEQLEN EVAL_WINDOWS EVAL_SEQLEN]
# Defaults: 32 x 512 calibration tokens, the first 16 windows of 2048 tokens of the test text
# (0 windows = all of it). Prints one markdown row per setting with seconds per block.
set -euo pipefail
bin=$1 model=$2 root=$3
ns=${4:-32} sl=${5:-512} ew=${6:-16} es=${7:-2048}
shared=${QS_SHARED:-$(dirname "$0")/../../shared}
valid=$shared/data/wikitext2-valid.tokens.txt
test=$shared/data/wikitext2-test.raw.txt
mkdir -p "$root"
ppl() { "$bin" eval "$1" --text "$test" --seqlen "$es" --max-windows "$ew" --json | sed -E 's/.*"ppl": ([0-9.]+).*/\1/'; }
per_block() { python3 -c 'import json,sys; m=json.load(open(sys.argv[1])); b=m["blocks"]; print("%.2f" % (sum(x["seconds"] for x in b)/len(b)))' "$1/manifest.json"; }
echo "calibration: $ns x $sl tokens of $(basename "$valid"); evaluation: $( [ "$ew" = 0 ] && echo all || echo "first $ew") windows of $es tokens of $(basename "$test")"
echo "| setting | RTN ppl | GPTQ ppl | RTN s/block | GPTQ s/block |"
echo "| --- | --- | --- | --- | --- |"
echo "| FP | $(ppl "$model") | | | |"
settings=("W4A16 per-channel:--wbits 4 --group -1" "W4A16 g128:--wbits 4 --group 128" "W3A16 g128:--wbits 3 --group 128"
          "W2A16 g64:--wbits 2 --group 64" "W8A8:--wbits 8 --group -1 --abits 8" "W6A6:--wbits 6 --group -1 --abits 6"
          "W4A4:--wbits 4 --group -1 --abits 4")
for s in "${settings[@]}"; do
  name=${s%%:*} args=${s#*:} tag=$(echo "$name" | tr -c 'A-Za-z0-9\n' '_')
  # shellcheck disable=SC2086
  "$bin" quantize "$model" -o "$root/rtn_$tag" --method rtn $args --quiet
  # shellcheck disable=SC2086
  "$bin" quantize "$model" -o "$root/gptq_$tag" --method gptq $args --calib "$valid" --nsamples "$ns" --seqlen "$sl" --quiet
  echo "| $name | $(ppl "$root/rtn_$tag") | $(ppl "$root/gptq_$tag") | $(per_block "$root/rtn_$tag") | $(per_block "$root/gptq_$tag") |"
done
