#!/usr/bin/env bash
# Weight-activation perplexity table: RTN vs QLLM channel reassembly (CR only, per-channel RTN
# weights) at W4A4, W4A8 and W6A6, calibrated on ../shared/data/wikitext2-valid and evaluated on
# wikitext2-test, with seconds per block and peak RSS of each quantization run.
#   bench/qllm_table.sh BIN MODEL_DIR OUT_ROOT [NSAMPLES SEQLEN EVAL_WINDOWS EVAL_SEQLEN CR_TOKENS]
set -euo pipefail
bin=$1 model=$2 root=$3
ns=${4:-32} sl=${5:-512} ew=${6:-16} es=${7:-2048} crt=${8:-2048}
shared=${QS_SHARED:-$(dirname "$0")/../../shared}
valid=$shared/data/wikitext2-valid.tokens.txt
test=$shared/data/wikitext2-test.raw.txt
mkdir -p "$root"
ppl() { "$bin" eval "$1" --text "$test" --seqlen "$es" --max-windows "$ew" --json | sed -E 's/.*"ppl": ([0-9.]+).*/\1/'; }
per_block() { python3 -c 'import json,sys; m=json.load(open(sys.argv[1])); b=m["blocks"]; print("%.2f" % (sum(x["seconds"] for x in b)/len(b)))' "$1/manifest.json"; }
rss() { /usr/bin/time -f "%M" "$@" 2>&1 >/dev/null | tail -1; }
echo "calibration: $ns x $sl tokens of $(basename "$valid") (CR search on $crt tokens); evaluation: first $ew windows of $es tokens of $(basename "$test")"
echo "| setting | RTN ppl | QLLM CR ppl | CR s/block | CR peak RSS MB |"
echo "| --- | --- | --- | --- | --- |"
for s in "W4A4:4:4" "W4A8:4:8" "W6A6:6:6"; do
  IFS=: read -r name wb ab <<<"$s"
  "$bin" quantize "$model" -o "$root/rtn_$name" --method rtn --wbits "$wb" --abits "$ab" --group -1 --quiet
  kb=$(rss "$bin" quantize "$model" -o "$root/cr_$name" --method qllm --wbits "$wb" --abits "$ab" --group -1 \
         --calib "$valid" --nsamples "$ns" --seqlen "$sl" --cr-tokens "$crt" --quiet)
  echo "| $name | $(ppl "$root/rtn_$name") | $(ppl "$root/cr_$name") | $(per_block "$root/cr_$name") | $((kb / 1024)) |"
done
