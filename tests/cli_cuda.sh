#!/usr/bin/env bash
# The CUDA backend end to end on SmolLM2-135M (QS_SMOLLM_DIR; a model without a tokenizer, such as
# stories260k, is calibrated and evaluated on seeded random ids) (exits 77 without a usable CUDA device):
# RTN W4 g128, GPTQ W4 g128, QLLM W4A4 (CR + EEC, 2 epochs) and DL-QAT W4 g128 (2 epochs)
# quantized on cpu and on cuda.
# - The issue's bar: each cuda run's perplexity (evaluated on cuda) within 1% of the cpu run's
#   (evaluated on cpu): FP and RTN with the default bf16 GEMM math.
# - GPTQ, QLLM and DL-QAT amplify any rounding change, so for them 1% of one cpu run is luck, not a
#   property of the kernels. Measured on the CPU alone (SmolLM2, 8 windows of 256 tokens):
#   GPTQ W4 g128 (8 x 128 calibration tokens) moved from 54.46 to 53.17 and 55.92 with --damp
#   0.0100001 and 0.010001 instead of 0.01, and to 51.98 with its frozen layers rounded to bf16
#   (cpu-fenced, QS_FENCED_BF16=1); QLLM W4A4 from 566.0 to 552.8 with --lr 5.0001e-4. So the cpu
#   run is repeated with two such perturbations (GPTQ --damp +-1e-5 relative, QLLM and DL-QAT
#   --lr), and the cuda run with fp32 GEMMs (QS_CUDA_GEMM=fp32) must be within max(1%, twice the
#   largest move they caused) of the cpu run; with the default math (bf16 GEMMs, GPTQ's frozen layers in
#   bf16) within the larger of that and QS_E2E_WIDE (default 10%): on SmolLM2 in 2026-12 the
#   QLLM setting here moved from 530.2 to 599.3 and 569.5 with --lr 5.0001e-4 and 4.9999e-4 (so
#   its bar is 26%), GPTQ from 53.27 to 50.39 and 57.13 (14%). More data does not make 1% a
#   property either: GPTQ with 32 x 256 calibration tokens, evaluated on 64 windows, moved from
#   46.18 to 46.80 and 47.07 (2%). A wrong kernel gives perplexities far outside both.
# - The GPU is deterministic too: a second GPTQ run and a QLLM run with one window per call
#   (--gpu-mem) give the same shards byte for byte; a killed cuda GPTQ run resumes to them (the
#   replayed blocks' layers in bf16 as the run left them). Without --gpu-mem a cuda run plans
#   for the GPU's free memory and prints that budget.
# QS_E2E_CPU_REF=FILE: the cpu side's figures (the cpu runs and their evaluations) come from FILE,
# written before by the same binary on the same model, data and settings with QS_E2E_CPU_ONLY=1
# (which runs only the cpu side, needs no GPU, and writes FILE): scripts/device-pack.sh does so,
# so that a GPU machine's minutes go to the GPU's runs. FILE's first line is a fingerprint of the
# binary, the model, the data and the settings; where it does not match, the cpu runs are made
# here as usual (and the script says so; QS_E2E_REF_CHECK=1: only that, then it stops).
# QS_E2E_DEVICE=cpu-fenced runs the same script with the fenced CPU device standing in for the
# GPU (ctest: cli_cuda_standin, and cli_cuda_standin_bf16 with QS_FENCED_BF16=1: the bf16 roads
# of GPTQ's quantized layers and EEC's Q(W)), so that the script itself is exercised on every
# machine.
set -u
bin=${QS_BIN:?run through ctest}
shared=${QS_SHARED:?}
smol=${QS_SMOLLM_DIR:?}
dev=${QS_E2E_DEVICE:-cuda}
tmp=${QS_TMP:-/tmp}/cli_cuda-$dev
rm -rf "$tmp"; mkdir -p "$tmp"
ref=${QS_E2E_CPU_REF:-} cpu_only=${QS_E2E_CPU_ONLY:-0}
[ "$cpu_only" != 1 ] || [ -n "$ref" ] || { echo "FAIL: QS_E2E_CPU_ONLY=1 needs QS_E2E_CPU_REF=FILE"; exit 1; }
if [ "$cpu_only" != 1 ] && [ "${QS_E2E_REF_CHECK:-0}" != 1 ]; then # (neither needs a GPU)
  out=$("$bin" quantize "$smol" -o "$tmp/probe" --device "$dev" --method rtn 2>&1 >/dev/null)
  if grep -q "no usable CUDA device\|no CUDA backend" <<<"$out"; then echo "skipped: $out"; exit 77; fi
fi
fail=0
die() { echo "FAIL: $*"; fail=1; }
source "$(dirname "$0")/lib/kill-resume.sh"
[ -f "$smol/config.json" ] || { echo "FAIL: $smol has no model (scripts/fetch-default-model.sh)"; exit 1; }
nb=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['num_hidden_layers'])" "$smol/config.json")
if [ -f "$smol/tokenizer.json" ]; then # text: wikitext2
  head -c 60000 "$shared/data/wikitext2-test.raw.txt" > "$tmp/test.txt"
  src=(--text "$tmp/test.txt"); cal=(--calib "$shared/data/wikitext2-valid.tokens.txt" --nsamples 8 --seqlen 128)
else # a model without a tokenizer (stories260k): seeded random ids
  python3 -c "import random; random.seed(3); print(' '.join(str(random.randrange(512)) for _ in range(2100)))" > "$tmp/ids.txt"
  src=(--ids-file "$tmp/ids.txt"); cal=(--calib random --nsamples 8 --seqlen 128)
fi
ppl() { "$bin" eval "$1" "${src[@]}" --seqlen 256 --max-windows 8 --json --device "$2" | sed -E 's/.*"ppl": ([0-9.]+).*/\1/'; }
# close A B [TOL]: A within TOL (default 1%) of B
close() { awk -v a="$1" -v b="$2" -v t="${3:-0.01}" 'BEGIN{d = a - b; if (d < 0) d = -d; exit !(a > 1 && b > 1 && d <= t * b)}'; }
wide=${QS_E2E_WIDE:-0.10}
exact=(env QS_CUDA_GEMM=fp32 QS_FENCED_BF16=0) # fp32 GEMMs, no bf16 weights
same() { for f in "$1"/blocks/*.qsh; do cmp -s "$f" "$2/blocks/$(basename "$f")" || return 1; done; }
declare -A perturb=([gptq]="--damp=0.0100001 --damp=0.0099999" [qllm]="--lr=5.0001e-4 --lr=4.9999e-4"
                    [dlqat]="--lr=1.00001e-2 --lr=0.99999e-2")
declare -A args=(
  [rtn]="--method rtn --wbits 4 --group 128"
  [gptq]="--method gptq --wbits 4 --group 128 ${cal[*]}"
  [qllm]="--method qllm --wbits 4 --group -1 --abits 4 --cr-tokens 256 --cr-candidates 8 --epochs 2 ${cal[*]}"
  [dlqat]="--method dlqat --wbits 4 --group 128 --epochs 2 ${cal[*]}")
# the cpu side: from the reference file where its fingerprint matches, else run here
tok=(); [ -f "$smol/tokenizer.json" ] && tok=("$smol/tokenizer.json")
settings="${args[*]} | ${perturb[*]} | ${src[*]}" # the data's paths out: their bytes count
settings=${settings//$shared/}; settings=${settings//$tmp/}
fingerprint=$({ cat "$bin" "$smol"/config.json "$smol"/*.safetensors "${tok[@]}" "${src[1]}" | sha256sum
  [ "${cal[1]}" = random ] || sha256sum < "${cal[1]}"
  echo "$settings"; } | sha256sum | cut -c1-32)
declare -A cref=()
if [ "$cpu_only" = 1 ]; then
  echo "fingerprint $fingerprint" > "$ref"
elif [ -n "$ref" ]; then
  if [ -s "$ref" ] && [ "$(head -1 "$ref")" = "fingerprint $fingerprint" ]; then
    while read -r k v; do cref[$k]=$v; done < <(tail -n +2 "$ref")
    echo "cpu figures from $ref"
  else
    echo "$ref is not for this binary, model, data and settings: the cpu runs are made here"
  fi
  [ "${QS_E2E_REF_CHECK:-0}" != 1 ] || exit 0 # only say whether it is taken
fi
# cpu KEY COMMAND...: the cpu figure KEY, from the reference file or COMMAND's output (then
# recorded with QS_E2E_CPU_ONLY=1); nothing on failure
cpu() {
  local k=$1 v; shift
  if [ -n "${cref[$k]:-}" ]; then echo "${cref[$k]}"; return; fi
  v=$("$@") && [ -n "$v" ] || return 1
  [ "$cpu_only" != 1 ] || echo "$k $v" >> "$ref"
  echo "$v"
}
# quant_cpu M OUT [FLAGS...]: method M quantized on cpu into OUT, and its perplexity
quant_cpu() {
  local m=$1 o=$2; shift 2
  # shellcheck disable=SC2086
  "$bin" quantize "$smol" ${args[$m]} "$@" -o "$o" --device cpu --quiet --restart >/dev/null && ppl "$o" cpu
}
f_cpu=$(cpu fp ppl "$smol" cpu) || die "FP perplexity on cpu"
if [ "$cpu_only" != 1 ]; then
  f_cuda=$(ppl "$smol" "$dev")
  echo "FP: cpu $f_cpu, $dev $f_cuda"
  close "$f_cuda" "$f_cpu" || die "FP perplexity on $dev $f_cuda vs cpu $f_cpu"
fi
for m in rtn gptq qllm dlqat; do
  a=$(cpu "$m" quant_cpu "$m" "$tmp/$m-cpu") || die "$m on cpu"
  # the cpu run's own spread under perturbations at the rounding level
  spread=0.01 moves=""
  for p in ${perturb[$m]:-}; do
    # shellcheck disable=SC2086
    e=$(cpu "$m$p" quant_cpu "$m" "$tmp/$m-cpu-p" ${p//=/ }) || die "$m on cpu with $p"
    moves+=" $p: $e"
    spread=$(awk -v a="$e" -v b="$a" -v s="$spread" 'BEGIN{d = (a - b) / b; if (d < 0) d = -d; d *= 2; print (d > s ? d : s)}')
  done
  [ "$cpu_only" != 1 ] || { echo "$m: cpu $a;$moves"; continue; }
  # shellcheck disable=SC2086
  "$bin" quantize "$smol" ${args[$m]} -o "$tmp/$m-cuda" --device "$dev" --progress-lines 2> "$tmp/$m-cuda.log" || die "$m on $dev: $(tail -2 "$tmp/$m-cuda.log")"
  b=$(ppl "$tmp/$m-cuda" "$dev")
  echo "$m: cpu $a, $dev $b ($(grep -o "$dev memory peak.*" "$tmp/$m-cuda.log"))"
  if [ "$m" = rtn ]; then
    close "$b" "$a" || die "$m: $dev perplexity $b is not within 1% of cpu $a"
    continue
  fi
  # bf16 GEMMs are a larger change than the perturbations: the wider of the two bars
  bar=$(awk -v w="$wide" -v s="$spread" 'BEGIN{print (w > s ? w : s)}')
  close "$b" "$a" "$bar" || die "$m: $dev perplexity $b (default math) is not within $bar of cpu $a"
  # shellcheck disable=SC2086
  "${exact[@]}" "$bin" quantize "$smol" ${args[$m]} -o "$tmp/$m-cuda32" --device "$dev" --quiet || die "$m on $dev, fp32 math"
  c=$(export QS_CUDA_GEMM=fp32 QS_FENCED_BF16=0; ppl "$tmp/$m-cuda32" "$dev")
  echo "$m: cpu perturbed$moves; $dev with fp32 GEMMs $c (bar $spread)"
  close "$c" "$a" "$spread" || die "$m: $dev perplexity $c (fp32 math) is not within $spread of cpu $a"
done
if [ "$cpu_only" = 1 ]; then
  [ $fail -eq 0 ] && echo "cpu figures written to $ref"
  exit $fail
fi
# without --gpu-mem a GPU run plans for the GPU's free memory (and says so)
[ "$dev" != cuda ] || grep -q -- "--gpu-mem not given: planning for" "$tmp/gptq-cuda.log" ||
  die "gptq on cuda without --gpu-mem printed no default budget: $(grep -m1 gpu-mem "$tmp/gptq-cuda.log")"
# shellcheck disable=SC2086
"$bin" quantize "$smol" ${args[gptq]} -o "$tmp/gptq-cuda2" --device "$dev" --quiet || die "second gptq on $dev"
same "$tmp/gptq-cuda" "$tmp/gptq-cuda2" || die "two GPTQ runs on $dev differ"
# the smallest budget the planner takes (the parts its refusal of 1 MiB names, + 3 MiB): one
# window per call, so the comparison below is between different windows per call
# shellcheck disable=SC2086
need=$("$bin" quantize "$smol" ${args[qllm]} -o "$tmp/qllm-probe" --device "$dev" --gpu-mem 1M --blocks-per-group 1 2>&1 |
  grep -o '([0-9.]* MiB' | tr -d '(' | awk '{s += $1} END {printf "%d", s + 2.999}')
# shellcheck disable=SC2086
out=$("$bin" quantize "$smol" ${args[qllm]} -o "$tmp/qllm-win" --device "$dev" --gpu-mem "${need}M" --blocks-per-group 1 \
  --progress-lines 2>&1) || die "qllm --gpu-mem ${need}M: $(tail -2 <<<"$out")"
win=$(grep -o "[0-9]* of 8 calibration windows per call" <<<"$out")
echo "qllm --gpu-mem ${need}M: $win"
[ "${win%% *}" -lt 8 ] 2>/dev/null || die "qllm --gpu-mem ${need}M did not split the calibration windows: '$win'"
# shellcheck disable=SC2086
"$bin" quantize "$smol" ${args[qllm]} -o "$tmp/qllm-k1" --device "$dev" --blocks-per-group 1 --quiet || die "qllm K=1"
same "$tmp/qllm-k1" "$tmp/qllm-win" || die "$dev QLLM differs with fewer windows per call"
t0=$(date +%s%N)
# shellcheck disable=SC2086
"$bin" quantize "$smol" ${args[gptq]} -o "$tmp/gptq-time" --device "$dev" --quiet
run_ms=$(( ($(date +%s%N) - t0) / 1000000 ))
# shellcheck disable=SC2086
kill_resume 4 "$run_ms" "$nb" "$tmp/gptq-killed" "$bin" quantize "$smol" ${args[gptq]} -o "$tmp/gptq-killed" --device "$dev" --quiet
# shellcheck disable=SC2086
"$bin" quantize "$smol" ${args[gptq]} -o "$tmp/gptq-killed" --device "$dev" --quiet || die "final resume"
echo "kills mid-run: $mid of $runs"
same "$tmp/gptq-cuda" "$tmp/gptq-killed" || die "a killed and resumed $dev GPTQ run differs"
[ $fail -eq 0 ] && echo ok
exit $fail
