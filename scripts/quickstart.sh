#!/usr/bin/env bash
# The README's first command: install what is missing, build, fetch the default model
# (SmolLM2-135M), quantize it with RTN and with QLLM at W4A4, and print the full-precision, RTN
# and QLLM perplexity on text every Debian machine has.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
scripts/build.sh build
scripts/fetch-default-model.sh build/qstream .cache
# Evaluation text: the GNU GPL v3 from base-files (on every Debian system). Calibration text: the
# other licenses there (Apache, Artistic, MPL, LGPL 2.1, GFDL 1.3), so the two texts differ.
lic=/usr/share/common-licenses
text=$lic/GPL-3
calib=.cache/calib-licenses.txt
cat $lic/Apache-2.0 $lic/Artistic $lic/MPL-2.0 $lic/LGPL-2.1 $lic/GFDL-1.3 > "$calib"
# QLLM W4A4 (weights 4-bit per output channel, activations 4-bit per token): channel reassembly
# plus efficient error correction (rank-4 LoRA trained per block, merged, re-quantized), against
# RTN at the same setting. The calibration budget (16 windows of 256 tokens, 5 epochs) is sized
# to finish in minutes on 2 cores; the paper's is 128 x 2048 tokens and 10 epochs.
rtn=.cache/smollm2-rtn-w4a4
out=.cache/smollm2-qllm-w4a4
echo "qstream: quantizing SmolLM2-135M with RTN W4A4 into $rtn"
build/qstream quantize .cache/smollm2 -o "$rtn" --method rtn --wbits 4 --abits 4 --group -1 --restart --quiet
echo "qstream: quantizing SmolLM2-135M with QLLM W4A4 (calibration: 16 x 256 tokens of $calib) into $out"
build/qstream quantize .cache/smollm2 -o "$out" --method qllm --wbits 4 --abits 4 --group -1 \
  --calib "$calib" --nsamples 16 --seqlen 256 --epochs 5 --cr-tokens 512 --cr-candidates 16 --restart
fp=$(build/qstream eval .cache/smollm2 --text "$text" --seqlen 512)
r=$(build/qstream eval "$rtn" --text "$text" --seqlen 512)
q=$(build/qstream eval "$out" --text "$text" --seqlen 512)
echo "qstream: perplexity on $text, seqlen 512"
echo "  full precision   : $fp"
echo "  RTN  W4A4        : $r"
echo "  QLLM W4A4        : $q"
