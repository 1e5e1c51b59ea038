#!/usr/bin/env bash
# QLLM ablation table on a real model: RTN, channel reassembly only (CR), error correction only
# (EEC), and CR+EEC in both training forms (paper Q(W)+sBA, merged Q(W+sBA)) with groups of
# K = 1 and K = 4 blocks, at W4A4 / W4A8 / W6A6 (weights per output channel), calibrated on
# ../shared/data/wikitext2-valid, evaluated on wikitext2-test; with seconds per block and the
# peak RSS of every quantization run. One markdown row per run, printed as it finishes.
#   bench/qllm_table.sh BIN MODEL_DIR OUT_ROOT
# Environment (defaults): NS=32 SL=256 EPOCHS=5 EW=8 ES=1024 CRT=512 CRC=16
#   SETTINGS="W4A4 W6A6 W4A8" VARIANTS="rtn cr eec cr+eec cr+eec-merged cr+eec-k4 cr+eec-merged-k4"
set -euo pipefail
bin=$1 model=$2 root=$3
NS=${NS:-32} SL=${SL:-256} EPOCHS=${EPOCHS:-5} EW=${EW:-8} ES=${ES:-1024} CRT=${CRT:-512} CRC=${CRC:-16}
SETTINGS=${SETTINGS:-"W4A4 W6A6 W4A8"}
VARIANTS=${VARIANTS:-"rtn cr eec cr+eec cr+eec-merged cr+eec-k4 cr+eec-merged-k4"}
shared=${QS_SHARED:-$(dirname "$0")/../../shared}
valid=$shared/data/wikitext2-valid.tokens.txt
test=$shared/data/wikitext2-test.raw.txt
mkdir -p "$root"
ppl() { "$bin" eval "$1" --text "$test" --seqlen "$ES" --max-windows "$EW" --json | sed -E 's/.*"ppl": ([0-9.]+).*/\1/'; }
per_block() { python3 -c 'import json,sys; m=json.load(open(sys.argv[1])); b=m["blocks"]; print("%.2f" % (sum(x["seconds"] for x in b)/len(b)))' "$1/manifest.json"; }
echo "calibration: $NS x $SL tokens of $(basename "$valid") (seed 0; CR search on $CRT tokens, at most $CRC candidates per site);" \
     "EEC: rank 4, $EPOCHS epochs, lr 5e-4, batch 1; evaluation: first $EW windows of $ES tokens of $(basename "$test")"
echo "FP ppl: $(ppl "$model")"
echo "| setting | variant | ppl | s/block | peak RSS MB |"
echo "| --- | --- | --- | --- | --- |"
for s in $SETTINGS; do
  wb=${s:1:1} ab=${s:3}
  for v in $VARIANTS; do
    case $v in
      rtn) args=(--method rtn) ;;
      cr) args=(--method qllm --eec off) ;;
      eec) args=(--method qllm --cr off --blocks-per-group 1) ;;
      cr+eec) args=(--method qllm --blocks-per-group 1) ;;
      cr+eec-merged) args=(--method qllm --eec-form merged --blocks-per-group 1) ;;
      cr+eec-k4) args=(--method qllm --blocks-per-group 4) ;;
      cr+eec-merged-k4) args=(--method qllm --eec-form merged --blocks-per-group 4) ;;
      *) echo "unknown variant $v" >&2; exit 2 ;;
    esac
    [ "$v" = rtn ] || args+=(--calib "$valid" --nsamples "$NS" --seqlen "$SL" --epochs "$EPOCHS" --cr-tokens "$CRT" --cr-candidates "$CRC")
    out=$root/${s}_$v
    kb=$(/usr/bin/time -f "%M" "$bin" quantize "$model" -o "$out" --wbits "$wb" --abits "$ab" --group -1 --restart --quiet "${args[@]}" 2>&1 >/dev/null | tail -1)
    echo "| $s | $v | $(ppl "$out") | $(per_block "$out") | $((kb / 1024)) |"
  done
done
