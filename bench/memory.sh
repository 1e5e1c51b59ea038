#!/usr/bin/env bash
# bench/memory.sh BUILD_DIR [WORK_DIR] - peak host memory of `qstream quantize` on a model with
# LLaMA-2-70B block shapes (hidden 8192, intermediate 28672, 64 heads, 8 KV heads, bf16, 3 blocks,
# 2 shards), against one block's bytes measured in the same run; and `--host-mem 1G` refused
# before anything is written. Target: peak RSS <= 3 x one block's bytes (+ calibration
# activations, none for RTN).
set -euo pipefail
build=${1:?usage: bench/memory.sh BUILD_DIR [WORK_DIR]}
work=${2:-$(mktemp -d)}
model=$work/llama70b-3blocks
[ -e "$model/model.safetensors.index.json" ] || "$build/bench/gen_model" "$model" --shape 70b --layers 3 --shards 2 --dtype bf16
block_bytes=$(python3 - "$model" <<'PY'
import json, os, struct, sys
d = sys.argv[1]; idx = json.load(open(f"{d}/model.safetensors.index.json"))["weight_map"]
total = 0
for f in set(idx.values()):
    with open(f"{d}/{f}", "rb") as fh:
        n = struct.unpack("<Q", fh.read(8))[0]; h = json.loads(fh.read(n))
    for k, v in h.items():
        if k.startswith("model.layers.0."): total += v["data_offsets"][1] - v["data_offsets"][0]
print(total)
PY
)
rm -rf "$work/out" "$work/out-1g"
/usr/bin/time -v "$build/qstream" quantize "$model" -o "$work/out" --method rtn --wbits 4 --group 128 2> "$work/time.txt" >/dev/null || { cat "$work/time.txt"; exit 1; }
peak_kb=$(awk -F: '/Maximum resident set size/ {gsub(/ /, "", $2); print $2}' "$work/time.txt")
wall=$(awk '/Elapsed \(wall clock\)/ {print $NF}' "$work/time.txt")
python3 -c "
b=$block_bytes; p=$peak_kb*1024
print(f'one block: {b/2**30:.2f} GiB; peak RSS: {p/2**30:.2f} GiB = {p/b:.2f} x one block (target <= 3); wall {\"$wall\"}')"
if "$build/qstream" quantize "$model" -o "$work/out-1g" --method rtn --wbits 4 --host-mem 1G 2> "$work/refused.txt"; then
  echo "FAIL: --host-mem 1G was accepted"; exit 1
fi
echo "--host-mem 1G: $(cat "$work/refused.txt")"
[ -e "$work/out-1g" ] && { echo "FAIL: the refused run left $work/out-1g"; exit 1; }
echo "nothing written: ok"
