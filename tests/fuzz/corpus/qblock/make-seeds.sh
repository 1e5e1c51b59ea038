#!/usr/bin/env bash
# Seeds for fuzz_qblock, made at test time (nothing binary is committed): block shards of
# stories260k quantized with RTN W4 g32 and W8 per channel.  make-seeds.sh QSTREAM CORPUS_DIR
set -euo pipefail
bin=$1 corpus=$2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
model=${QS_SHARED:?}/models/stories260k
"$bin" quantize "$model" -o "$work/a" --method rtn --wbits 4 --group 32 --quiet
"$bin" quantize "$model" -o "$work/b" --method rtn --wbits 8 --group -1 --sym --quiet
cp "$work/a/blocks/block-0000.qsh" "$corpus/w4g32.qsh"
cp "$work/b/blocks/block-0001.qsh" "$corpus/w8pc.qsh"
