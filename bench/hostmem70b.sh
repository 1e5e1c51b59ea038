#!/usr/bin/env bash
# bench/hostmem70b.sh BUILD_DIR [WORK_DIR] - how honest --host-mem's plan is on LLaMA-2-70B-shaped
# blocks (gen_model 70b, bf16, LAYERS of them, default 1): per method, the smallest budget the planner accepts
# (the block with its quantized result plus the scratch its refusal of a 1 MiB budget names),
# then a run at that budget (rounded up to 64 MiB) and its peak resident set (/usr/bin/time), as
# a ratio of the budget (<= 1: the plan holds the process; near 1: it wastes nothing). The
# process also holds what no plan counts (the program, the libraries, OpenBLAS's and zstd's
# buffers, the tensor catalogue): tens of MiB. SliderQuant (slider) holds up to four blocks: its
# smallest budget is four of them with their results plus the scratch, which counts the trainers
# of a window of min(LAYERS, 4) blocks (LAYERS 5 or more: a four-block window runs). Environment:
# METHODS ("gptq qllm-eec"), SL (2048), NS (1), DEVICE (cpu), LAYERS (1), SHAPE (70b; gen_model's
# 7b or tiny for a machine too small for 70B blocks).
set -euo pipefail
. "$(dirname "$0")/methods70b.sh"
build=${1:?usage: bench/hostmem70b.sh BUILD_DIR [WORK_DIR]}
work=${2:-$(mktemp -d)}
METHODS=${METHODS:-"gptq qllm-eec"} SL=${SL:-2048} NS=${NS:-1} DEVICE=${DEVICE:-cpu} LAYERS=${LAYERS:-1} SHAPE=${SHAPE:-70b}
model=$work/llama-$SHAPE-${LAYERS}blocks
[ -e "$model/config.json" ] || "$build/bench/gen_model" "$model" --shape "$SHAPE" --layers "$LAYERS" --shards 1 --dtype bf16 >/dev/null
echo "device $DEVICE; $LAYERS $SHAPE-shaped LLaMA block(s); calibration $NS x $SL tokens"
echo "| method | smallest accepted --host-mem | peak RSS at it | peak / budget | slots | wall |"
echo "| --- | --- | --- | --- | --- | --- |"
for m in $METHODS; do
  method_args "$m"
  args+=(--calib random --nsamples "$NS" --seqlen "$SL" --device "$DEVICE")
  rm -rf "$work/out-$m"
  msg=$("$build/qstream" quantize "$model" -o "$work/out-$m" --host-mem 1M "${args[@]}" 2>&1 || true)
  # "... (X GiB as stored, Y GiB with its quantized result) plus Z GiB of ... scratch", or for
  # the four blocks SliderQuant holds "(..., Y GiB with its quantized result, each) plus Z GiB"
  n=1; grep -q "the four blocks SliderQuant holds" <<<"$msg" && n=4
  need=$(sed -nE 's/.*, ([0-9.]+) GiB with its quantized result(, each)?\) plus ([0-9.]+) GiB.*/\1 \3/p' <<<"$msg" |
    awk -v n="$n" '{printf "%d", (n * $1 + $2) * 1024 + 5 * n + 5.999}')  # + 5 MiB a figure: each is rounded to 0.01 GiB
  [ -n "$need" ] || { echo "| $m | no plan in: $msg | | | | |"; continue; }
  budget=$(( (need + 63) / 64 * 64 ))
  t0=$(date +%s)
  log=$(/usr/bin/time -v "$build/qstream" quantize "$model" -o "$work/out-$m" --host-mem "${budget}M" "${args[@]}" \
    --progress-lines 2>&1) || { echo "| $m | ${budget} MiB | failed: $(grep -v '^\s' <<<"$log" | tail -1) | | | |"; continue; }
  rss=$(sed -nE 's/.*Maximum resident set size \(kbytes\): ([0-9]+).*/\1/p' <<<"$log")
  slots=$(sed -nE 's/.*\(([0-9]+) kept from an earlier run, ([0-9]+) slots.*/\2/p' <<<"$log")
  echo "| $m | $need MiB (run at $budget) | $((rss / 1024)) MiB | $(awk -v p="$rss" -v b="$budget" 'BEGIN{printf "%.3f", p / 1024 / b}') | $slots | $(( $(date +%s) - t0 )) s |"
done
