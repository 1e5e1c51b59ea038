#!/usr/bin/env bash
# --gpu-mem is a bound, not a hint: for each method, at budgets from below the smallest plan up,
# every accepted run's backend memory peak (the bytes allocated through the backend, printed as
# "<device> memory peak ... (N bytes)") is at most the budget, a refused one names --gpu-mem and
# writes nothing, and each method is both refused and accepted somewhere on the ladder (so the
# plan is tight enough to matter). stories260k on the CPU backend, whose allocations are counted
# the way the CUDA pool's are, and on cpu-fenced, which also stages the next blocks' stored
# weights in backend memory as a GPU does; DEVICES=cuda in the environment runs it on a GPU.
# GPTQ's plan moves the Hessians to the host where the budget cannot hold one beside a layer's
# factor: every accepted GPTQ run gives the same shards byte for byte (the plan changes where
# things are and how many windows share a call, never the bits), and the ladder has runs both
# with the Hessians on the device and on the host. Without act-order (gptq-in-place) the column
# batches run in the layer's own backend copy, which the plan counts as such. Likewise EEC's plan
# keeps the float weights on the host while it trains where the budget cannot hold Q(W) beside
# them: every accepted qllm-eec run gives the same shards, and the ladder has both.
# cpu-fenced-bf16: cpu-fenced with frozen weights in bf16 as on a GPU (QS_FENCED_BF16=1: GPTQ's
# quantized layers, EEC's Q(W), whose float weights then leave the device while it trains on
# the host road, and the reassembly search's candidate weights), whose plan counts them so.
set -u
bin=${QS_BIN:?run through ctest}
st=${QS_SHARED:?run through ctest}/models/stories260k
tmp=${QS_TMP:-/tmp}/cli_gpumem
devices=${DEVICES:-cpu cpu-fenced cpu-fenced-bf16}
rm -rf "$tmp"; mkdir -p "$tmp"
fail=0
die() { echo "FAIL: $*"; fail=1; }
base=(quantize "$st" --wbits 4 --group 32 --calib random --nsamples 6 --seqlen 64 --progress-lines)
declare -A args=(
  [gptq]="--method gptq --act-order"
  [gptq-in-place]="--method gptq"
  [qllm-cr]="--method qllm --abits 4 --eec off --cr-tokens 128 --cr-candidates 4"
  [qllm-eec]="--method qllm --abits 4 --cr-tokens 128 --cr-candidates 4 --epochs 1 --blocks-per-group 2"
)
budgets=(200K 400K 500K 600K 800K 1M 1500K 1750K 2M 3M 6M)
bytes() { local v=${1%[KMG]}; case $1 in *K) echo $((v << 10));; *M) echo $((v << 20));; *G) echo $((v << 30));; esac; }
for dev in $devices; do
devarg=$dev; envs=(env); methods="gptq gptq-in-place qllm-cr qllm-eec"
[ "$dev" = cpu-fenced-bf16 ] && devarg=cpu-fenced envs=(env QS_FENCED_BF16=1) methods="gptq gptq-in-place qllm-cr qllm-eec"
# a GPU's own memory (the cuBLAS workspace, 32 MiB, and scratch) comes on top of the ladder
off=0
if [ "$dev" = cuda ]; then
  out=$("$bin" quantize /nonexistent -o "$tmp/probe" --device cuda 2>&1)
  grep -qE "no usable CUDA device|no CUDA backend" <<<"$out" && { echo "no usable CUDA device: skipped"; exit 77; }
  off=$((40 << 20))
fi
for m in $methods; do
  acc=0; ref=0; line=""; first=""; hh=0; hd=0
  for b in "${budgets[@]}"; do
    d=$tmp/$dev-$m-$b
    budget=$(( $(bytes "$b") + off ))
    # shellcheck disable=SC2086
    if out=$("${envs[@]}" "$bin" "${base[@]}" ${args[$m]} --device "$devarg" -o "$d" --gpu-mem "$budget" 2>&1); then
      peak=$(sed -nE 's/.*memory peak .*\(([0-9]+) bytes\).*/\1/p' <<<"$out")
      [ -n "$peak" ] || { die "$dev $m --gpu-mem $b: no memory peak printed"; continue; }
      [ "$peak" -le "$budget" ] || die "$dev $m --gpu-mem $budget: peak $peak bytes is over the budget"
      acc=$((acc + 1)); line+=" $b:$((peak >> 10))K"
      if [ "${m%-in-place}" = gptq ] || [ "$m" = qllm-eec ]; then
        if grep -q "GPTQ's Hessians on the host\|EEC's float weights on the host\|act-order batches in the layers" <<<"$out"; then
          hh=$((hh + 1)); line+="(host)"
        else hd=$((hd + 1)); fi
        if [ -z "$first" ]; then first=$d
        else for f in "$first"/blocks/*.qsh; do
            cmp -s "$f" "$d/blocks/$(basename "$f")" || die "$dev $m --gpu-mem $b: $(basename "$f") differs from $(basename "$first")'s"
          done
        fi
      fi
    else
      grep -q -- "--gpu-mem" <<<"$out" || die "$dev $m --gpu-mem $b refused without naming it: $out"
      [ -e "$d" ] && die "$dev $m --gpu-mem $b: the refusal left $d behind"
      ref=$((ref + 1)); line+=" $b:refused"
    fi
  done
  echo "$dev $m (budget:peak)$line"
  [ $acc -ge 1 ] && [ $ref -ge 1 ] || die "$dev $m: $acc accepted and $ref refused on the ladder ${budgets[*]}"
  [ "${m%-in-place}" != gptq ] && [ "$m" != qllm-eec ] || { [ $hh -ge 1 ] && [ $hd -ge 1 ]; } ||
    die "$dev $m: $hh runs with the Hessians / float weights on the host and $hd on the device on the ladder (want both)"
done
done
[ $fail -eq 0 ] && echo ok
exit $fail
