#!/usr/bin/env bash
# DL-QAT against the weight-only baselines on a real model: RTN, GPTQ, QLLM's error correction
# alone (merged form, no reassembly: it also trains the deployed quantized weights) and DL-QAT,
# at W4A16 g128, W3A16 g128 and W2A16 g64 (asymmetric), calibrated on
# ../shared/data/wikitext2-valid, evaluated on wikitext2-test; seconds per block and the peak RSS
# of every quantization run. One markdown row per run, printed as it finishes.
#   bench/dlqat_table.sh BIN MODEL_DIR OUT_ROOT
# Environment (defaults): NS=16 SL=256 EPOCHS=5 EW=8 ES=1024 LR=1e-2 (DL-QAT's) ALPHA=1
#   SETTINGS="W4A16g128 W3A16g128 W2A16g64" VARIANTS="rtn gptq eec-merged dlqat"
set -euo pipefail
bin=$1 model=$2 root=$3
NS=${NS:-16} SL=${SL:-256} EPOCHS=${EPOCHS:-5} EW=${EW:-8} ES=${ES:-1024} LR=${LR:-1e-2} ALPHA=${ALPHA:-1}
SETTINGS=${SETTINGS:-"W4A16g128 W3A16g128 W2A16g64"}
VARIANTS=${VARIANTS:-"rtn gptq eec-merged dlqat"}
shared=${QS_SHARED:-$(dirname "$0")/../../shared}
valid=$shared/data/wikitext2-valid.tokens.txt
test=$shared/data/wikitext2-test.raw.txt
mkdir -p "$root"
ppl() { "$bin" eval "$1" --text "$test" --seqlen "$ES" --max-windows "$EW" --json | sed -E 's/.*"ppl": ([0-9.]+).*/\1/'; }
per_block() { python3 -c 'import json,sys; m=json.load(open(sys.argv[1])); b=m["blocks"]; print("%.2f" % (sum(x["seconds"] for x in b)/len(b)))' "$1/manifest.json"; }
rss() { if [ -x /usr/bin/time ]; then /usr/bin/time -f "%M" "$@" 2>&1 >/dev/null | tail -1; else "$@" >/dev/null; echo 0; fi; }
echo "calibration: $NS x $SL tokens of $(basename "$valid") (seed 0); EEC and DL-QAT: rank 4, $EPOCHS epochs, batch 1," \
     "K = 1 (EEC lr 5e-4; DL-QAT lr $LR, alpha $ALPHA); evaluation: first $EW windows of $ES tokens of $(basename "$test")"
echo "FP ppl: $(ppl "$model")"
echo "| setting | variant | ppl | s/block | peak RSS MB |"
echo "| --- | --- | --- | --- | --- |"
cal=(--calib "$valid" --nsamples "$NS" --seqlen "$SL")
for s in $SETTINGS; do
  wb=${s:1:1} g=${s#*g}
  for v in $VARIANTS; do
    case $v in
      rtn) args=(--method rtn) ;;
      gptq) args=(--method gptq "${cal[@]}") ;;
      eec-merged) args=(--method qllm --cr off --eec-form merged --blocks-per-group 1 --epochs "$EPOCHS" "${cal[@]}") ;;
      dlqat) args=(--method dlqat --epochs "$EPOCHS" --lr "$LR" --lora-alpha "$ALPHA" "${cal[@]}") ;;
      *) echo "unknown variant $v" >&2; exit 2 ;;
    esac
    out=$root/${s}_$v
    kb=$(rss "$bin" quantize "$model" -o "$out" --wbits "$wb" --group "$g" --restart --quiet "${args[@]}")
    echo "| $s | $v | $(ppl "$out") | $(per_block "$out") | $((kb / 1024)) |"
  done
done
