#!/usr/bin/env bash
# The README's first command: install what is missing, build, fetch the default model
# (SmolLM2-135M), quantize it with GPTQ W4A16 g128, and print full-precision vs quantized
# perplexity on text every Debian machine has.
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
out=.cache/smollm2-gptq-w4g128
echo "qstream: quantizing SmolLM2-135M with GPTQ W4A16 g128 (calibration: 32 x 256 tokens of $calib) into $out"
build/qstream quantize .cache/smollm2 -o "$out" --method gptq --wbits 4 --group 128 \
  --calib "$calib" --nsamples 32 --seqlen 256 --restart
fp=$(build/qstream eval .cache/smollm2 --text "$text" --seqlen 512)
q=$(build/qstream eval "$out" --text "$text" --seqlen 512)
echo "qstream: perplexity on $text, seqlen 512"
echo "  full precision   : $fp"
echo "  GPTQ W4A16 g128  : $q"
