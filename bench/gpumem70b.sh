#!/usr/bin/env bash
# bench/gpumem70b.sh BUILD_DIR [WORK_DIR] [DEVICE] - how tight --gpu-mem's plan is on one
# LLaMA-2-70B-shaped block (gen_model 70b, bf16, 1 layer): per method, the smallest budget the
# planner accepts (the sum of the parts its refusal of a 1 MiB budget names), then a run at that
# budget (rounded up to 64 MiB) and the device's peak it reports, as a ratio of the budget
# (<= 1 means the plan holds; near 1 means it wastes nothing; on cuda also what its memory pools
# held from the device, which granules and kept frees can put above the peak). DEVICE: cpu-fenced (default: the
# host stands in for the device, no GPU needed) or cuda. Environment: METHODS ("gptq qllm-eec"),
# SL (2048: one window of this many tokens is the unit the plan keeps), NS (1).
set -euo pipefail
. "$(dirname "$0")/methods70b.sh"
build=${1:?usage: bench/gpumem70b.sh BUILD_DIR [WORK_DIR] [DEVICE]}
work=${2:-$(mktemp -d)}
dev=${3:-cpu-fenced}
METHODS=${METHODS:-"gptq qllm-eec"} SL=${SL:-2048} NS=${NS:-1}
model=$work/llama-70b-1blocks  # the same as block70b.sh and hostmem70b.sh make for one block
[ -e "$model/config.json" ] || "$build/bench/gen_model" "$model" --shape 70b --layers 1 --shards 1 --dtype bf16 >/dev/null
echo "device $dev; one LLaMA-2-70B block; calibration $NS x $SL tokens"
echo "| method | smallest accepted --gpu-mem | peak at it | peak / budget | wall |"
echo "| --- | --- | --- | --- | --- |"
for m in $METHODS; do
  method_args "$m"
  args+=(--calib random --nsamples "$NS" --seqlen "$SL" --device "$dev")
  rm -rf "$work/out-$m"
  msg=$("$build/qstream" quantize "$model" -o "$work/out-$m" --gpu-mem 1M "${args[@]}" 2>&1 || true)
  need=$(grep -o '([0-9.]* MiB' <<<"$msg" | tr -d '(' | awk '{s += $1} END {printf "%d", s + 0.999}')
  budget=$(( (need + 63) / 64 * 64 ))
  t0=$(date +%s)
  log=$("$build/qstream" quantize "$model" -o "$work/out-$m" --gpu-mem "${budget}M" "${args[@]}" --progress-lines 2>&1) ||
    { echo "| $m | ${budget} MiB | failed: $(tail -1 <<<"$log") | | |"; continue; }
  peak=$(sed -n 's/.*memory peak \([0-9.]*\) MiB.*/\1/p' <<<"$log")
  # cuda: what its memory pools held from the device, when more (granules, kept frees)
  held=$(sed -n 's/.*pools held at most \([0-9.]*\) MiB.*/\1/p' <<<"$log")
  [ -n "$held" ] && held=" (pools held $held MiB, $(awk -v p="$held" -v b="$budget" 'BEGIN{printf "%.3f", p / b}'))"
  echo "| $m | $need MiB (run at $budget) | $peak MiB$held | $(awk -v p="$peak" -v b="$budget" 'BEGIN{printf "%.3f", p / b}') | $(( $(date +%s) - t0 )) s |"
done
