#!/usr/bin/env bash
# Host / backend memory separation, without a GPU: every command that computes runs on the
# "cpu-fenced" device, whose backend pointers fault when the host touches them (cpu/cpu_fence.c),
# so a caller that reads backend memory directly (and would crash on CUDA) crashes here. The
# fenced runs must also give the plain CPU run's bits: shards byte-identical for RTN, GPTQ
# (act-order, groups), QLLM CR only, QLLM CR + EEC (groups of 2, spilled states), a resume that
# replays both calibration paths from shards, and the same eval / logits output. stories260k.
# cpu-fenced also stages the stored weights through its copy ops as the GPU does (the loader
# copies them into backend memory, COMPUTE widens them there with to_f32), so that path is
# held to the CPU's bytes too, as are GPTQ's finished codes coming down from backend memory beside
# the next pass's calls (and that deferral given up first under a tight --gpu-mem).
set -u
bin=${QS_BIN:?run through ctest}
st=${QS_SHARED:?run through ctest}/models/stories260k
tmp=${QS_TMP:-/tmp}/cli_fenced
rm -rf "$tmp"; mkdir -p "$tmp"
fail=0
die() { echo "FAIL: $*"; fail=1; }
same() { for b in 0 1 2 3 4; do cmp -s "$1/blocks/block-000$b.qsh" "$2/blocks/block-000$b.qsh" || return 1; done; }
base=(quantize "$st" --wbits 4 --calib random --nsamples 6 --seqlen 64 --quiet)
run() { # NAME ARGS...: the same run on cpu and cpu-fenced, shards compared
  local name=$1; shift
  "$bin" "${base[@]}" "$@" -o "$tmp/$name-cpu" --device cpu || { die "$name on cpu"; return; }
  "$bin" "${base[@]}" "$@" -o "$tmp/$name-fenced" --device cpu-fenced || { die "$name on cpu-fenced"; return; }
  same "$tmp/$name-cpu" "$tmp/$name-fenced" || die "$name: cpu-fenced shards differ from cpu"
}
run rtn --method rtn --group 32
run gptq --method gptq --group 32 --act-order
run cr --method qllm --abits 4 --eec off --cr-tokens 128 --cr-candidates 4
eec=(--method qllm --abits 4 --cr-tokens 128 --cr-candidates 4 --epochs 2 --blocks-per-group 2)
run eec "${eec[@]}" --spill
# resume without activation checkpoints: both paths are replayed from shards and source weights
d=$tmp/eec-fenced
rm -rf "$d/blocks/block-0002.qsh" "$d/blocks/block-0003.qsh" "$d/blocks/block-0004.qsh" "$d/acts"
out=$("$bin" "${base[@]}" "${eec[@]}" --spill -o "$d" --device cpu-fenced --progress-lines 2>&1) || die "fenced resume: $out"
grep -q "replayed 2 finished blocks" <<<"$out" || die "the resume did not replay: $out"
# several backend calls per pass (--gpu-mem): each call's windows go up while the previous call
# computes and the states' results come down while the next computes; still the CPU's bytes
for spec in "gptq 1500K --method gptq --group 32 --act-order" "eec 4M ${eec[*]} --spill"; do
  read -r name budget rest <<<"$spec"
  # shellcheck disable=SC2086
  out=$("$bin" "${base[@]}" $rest -o "$tmp/$name-calls" --device cpu-fenced --gpu-mem "$budget" --progress-lines 2>&1) ||
    die "$name under --gpu-mem $budget on cpu-fenced: $out"
  line=$(grep -o "[0-9]* of [0-9]* calibration windows per call.*" <<<"$out")
  echo "$name --gpu-mem $budget: $line"
  grep -q "^[1-5] of 6 calibration windows per call; stored weights staged" <<<"$line" || die "$name: not several staged calls: $line"
  same "$tmp/$name-cpu" "$tmp/$name-calls" || die "$name: several staged calls differ from the CPU's single call"
done
# the fenced device stages like a GPU: LOAD copied the stored weights into backend memory, and
# the shards above came out of that path
grep -q "stored weights staged there by the loader" <<<"$out" || die "cpu-fenced did not stage the stored weights: $out"
same "$tmp/eec-cpu" "$d" || die "fenced replayed resume differs"
# GPTQ's finished codes stay in backend memory and come down beside the next pass's calls
# (pipeline/results.c; fenced: a stage_download of a buffer an op after its mark used is an
# error); under a budget that cannot hold a block's codes beside the step that is given up
# first, before the staging (1300K: found by a sweep; the plan's sizes move it)
for spec in "1500K 1" "1300K 0"; do
  read -r budget want <<<"$spec"
  out=$("$bin" "${base[@]}" --method gptq --group 32 --act-order -o "$tmp/gptq-$budget" --device cpu-fenced --gpu-mem "$budget" --progress-lines 2>&1) ||
    die "gptq under --gpu-mem $budget: $out"
  line=$(grep -o "[0-9]* of [0-9]* calibration windows per call.*" <<<"$out")
  got=$(grep -c "finished codes came down beside" <<<"$line")
  grep -q "stored weights staged" <<<"$line" && [ "$got" = "$want" ] || die "gptq --gpu-mem $budget: want staged and deferred=$want: $line"
  same "$tmp/gptq-cpu" "$tmp/gptq-$budget" || die "gptq --gpu-mem $budget: shards differ from the CPU's"
done

x=11; ids=""
for i in $(seq 200); do x=$(( (x * 1103515245 + 12345) % 2147483648 )); ids="$ids $(( (x >> 16) % 512 ))"; done
echo "$ids" > "$tmp/ids.txt"
for m in "$st" "$tmp/gptq-cpu" "$tmp/eec-cpu"; do
  a=$("$bin" eval "$m" --ids-file "$tmp/ids.txt" --seqlen 64 --json --device cpu | sed 's/, "seconds.*//')
  b=$("$bin" eval "$m" --ids-file "$tmp/ids.txt" --seqlen 64 --json --device cpu-fenced | sed 's/, "seconds.*//')
  echo "eval $(basename "$m"): $a"
  { [ -n "$a" ] && [ "$a" = "$b" ]; } || die "eval $m: cpu '$a' vs cpu-fenced '$b'"
done
"$bin" logits "$st" --ids "1 67 89 300" -o "$tmp/l-cpu.bin" --device cpu || die "logits on cpu"
"$bin" logits "$st" --ids "1 67 89 300" -o "$tmp/l-fenced.bin" --device cpu-fenced || die "logits on cpu-fenced"
cmp -s "$tmp/l-cpu.bin" "$tmp/l-fenced.bin" || die "logits differ"
[ $fail -eq 0 ] && echo ok
exit $fail
