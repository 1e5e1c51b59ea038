#!/usr/bin/env bash
# scripts/device-check.sh [OUT] - the GPU checks, on a machine with a CUDA device, from the
# checkout with .devlibs/ made by scripts/device-pack.sh (no build there). Writes logs to OUT
# (default /tmp/qs-device). In order, each step's output kept:
# 1. ops: test_backend_ops cuda with QS_CUDA_GEMM fp32, tf32 and bf16 (every op against the
#    CPU), test_gptq cuda (a layer's GPTQ on the device against the host's), test_block_backward
#    cuda (a block's forward, backward and step against the CPU);
# 2. e2e: the CUDA end-to-end test (tests/cli_cuda.sh) with the carried data on SmolLM2, when
#    both halves of its GGUF (.devgguf/1, .devgguf/2: carried by two earlier calls) are there and
#    their checksum holds, else on stories260k (QS_SMOLLM_DIR overrides either), and
#    tests/cli_gpumem.sh on cuda (every accepted --gpu-mem's peak within it);
# 3. bench: bench_cublas (the cuBLAS bf16 rate), bench_gemm on cuda (bf16, tf32 and fp32 math),
#    bench/block70b.sh on one block (LAYERS=1; NS x SL calibration tokens, default 128 x 2048,
#    the issue's figure; each method cut at METHOD_S=200 s, its row from the blocks done);
# 4. mem: bench/gpumem70b.sh (the plan's smallest budget on a 70B block and the peak at it).
# STEPS (default "ops e2e bench") picks some of them: one device call is at most 10 minutes, a
# session's device time 15, so: "ops e2e" in one call, "bench" in the next, "mem" if time is left.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-/tmp/qs-device}; mkdir -p "$out"
steps=${2:-ops e2e bench}
# QS_CHECK_DEVICE=cpu-fenced rehearses the whole check on a machine without a GPU (the fenced CPU
# device stands in; bench_cublas is skipped there)
dev=${QS_CHECK_DEVICE:-cuda}
has() { [[ " $steps " == *" $1 "* ]]; }
d=$PWD/.devlibs
export LD_LIBRARY_PATH=$d/lib:${LD_LIBRARY_PATH:-}
export PATH=$d/bin:$PATH
# CUDA's own libraries (cuBLAS, cuSOLVER: too large to carry) come from that machine: where the
# loader does not find one, look for it in the toolkit and in Python's nvidia wheels
for lib in $(for b in "$d"/bin/*; do ldd "$b"; done 2>/dev/null | awk '/not found/ {print $1}' | sort -u); do
  f=$(find /usr/local /opt /usr/lib -name "$lib" -print -quit 2>/dev/null)
  if [ -n "$f" ]; then export LD_LIBRARY_PATH=$LD_LIBRARY_PATH:$(dirname "$f"); echo "$lib: $(dirname "$f")"
  else echo "$lib: not found on this machine"; fi
done
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1 | tee "$out/gpu.txt"
if has ops; then
  for m in fp32 tf32 bf16; do
    echo "== test_backend_ops $dev, GEMM math $m"
    QS_CUDA_GEMM=$m timeout 120 "$d/bin/test_backend_ops" "$dev" > "$out/ops-$m.log" 2>&1; rc=$?; echo "rc=$rc"
    grep -E "FAIL|CHECK|^ok" "$out/ops-$m.log" | head -20
    # a fault surfaces at a later op's check: once more with every launch synchronous, to name it
    if [ "$rc" -ne 0 ] && [ "$m" = fp32 ]; then
      CUDA_LAUNCH_BLOCKING=1 QS_CUDA_GEMM=$m timeout 120 "$d/bin/test_backend_ops" "$dev" > "$out/ops-$m-blocking.log" 2>&1
      echo "blocking launches: rc=$?"; grep -E "FAIL|CHECK" "$out/ops-$m-blocking.log" | head -5
    fi
    echo "== test_block_backward $dev, GEMM math $m"
    QS_CUDA_GEMM=$m timeout 60 "$d/bin/test_block_backward" "$dev" > "$out/block-$m.log" 2>&1; echo "rc=$?"
    grep -E "FAIL|CHECK|vs cpu|^ok" "$out/block-$m.log" | head -20
  done
  echo "== test_gptq $dev"
  timeout 60 "$d/bin/test_gptq" "$dev" > "$out/gptq.log" 2>&1; echo "rc=$?"
  grep -E "FAIL|CHECK|on $dev|^ok" "$out/gptq.log" | head -20
fi
if has e2e; then
  model=$d/models/stories260k
  if [ -s .devgguf/1/part ] && [ -s .devgguf/2/part ]; then
    if [ "$(cat .devgguf/1/part .devgguf/2/part | sha256sum | cut -d' ' -f1)" = "$(cat .devgguf/2/sha256)" ]; then
      [ -s /tmp/qs-smol/model.safetensors ] || { cat .devgguf/1/part .devgguf/2/part > /tmp/qs-smol.gguf &&
        "$d/bin/qstream" import-gguf /tmp/qs-smol.gguf -o /tmp/qs-smol; }
      [ -s /tmp/qs-smol/model.safetensors ] && model=/tmp/qs-smol
    else
      echo "the halves of the SmolLM2 GGUF in .devgguf do not match its checksum: stories260k instead"
    fi
  fi
  echo "== cli_cuda on ${QS_SMOLLM_DIR:-$model}"
  # the cpu side measured by device-pack.sh where it is for this model (else it runs here)
  QS_E2E_CPU_REF=$d/cpu-ref.txt QS_BIN=$d/bin/qstream QS_SHARED=$d QS_SMOLLM_DIR=${QS_SMOLLM_DIR:-$model} QS_TMP=/tmp/qs-tmp \
    QS_E2E_DEVICE=$dev timeout 420 bash tests/cli_cuda.sh > "$out/cli_cuda.log" 2>&1; echo "rc=$?"
  grep -v "^block" "$out/cli_cuda.log" | tail -15
  echo "== cli_gpumem on $dev"
  DEVICES=$dev QS_BIN=$d/bin/qstream QS_SHARED=$d QS_TMP=/tmp/qs-tmp timeout 120 bash tests/cli_gpumem.sh \
    > "$out/cli_gpumem.log" 2>&1; echo "rc=$?"
  tail -5 "$out/cli_gpumem.log"
fi
has bench || has mem || exit 0
echo "== bench"
has bench && { [ "$dev" != cuda ] || "$d/bin/bench_cublas" 8192 8192 8192 10; "$d/bin/bench_gemm" "$dev" 8192 8192 8192 10
  QS_CUDA_GEMM=tf32 "$d/bin/bench_gemm" "$dev" 8192 8192 8192 5; QS_CUDA_GEMM=fp32 "$d/bin/bench_gemm" "$dev" 8192 8192 8192 5; } |
  tee "$out/gemm.txt"
mkdir -p /tmp/qs-bench/build/bench && ln -sf "$d/bin/qstream" /tmp/qs-bench/build/qstream &&
  ln -sf "$d/bin/gen_model" /tmp/qs-bench/build/bench/gen_model && ln -sf "$d/bin/bench_gemm" /tmp/qs-bench/build/bench/bench_gemm &&
  ln -sf "$d/bin/bench_cublas" /tmp/qs-bench/build/bench/bench_cublas
if has bench; then
  echo "== block70b on $dev"
  # one block a method, each cut at METHOD_S seconds (its row then comes from the blocks done)
  NS=${NS:-128} SL=${SL:-2048} EPOCHS=${EPOCHS:-10} LAYERS=${LAYERS:-1} METHOD_S=${METHOD_S:-200} timeout 480 \
    bash bench/block70b.sh /tmp/qs-bench/build /tmp/qs-bench "$dev" > "$out/block70b.txt" 2>&1; echo "rc=$?"
  grep -v "^gemm" "$out/block70b.txt" | tail -12
fi
if has mem; then
  echo "== gpumem70b on $dev"
  timeout 300 bash bench/gpumem70b.sh /tmp/qs-bench/build /tmp/qs-bench "$dev" > "$out/gpumem70b.txt" 2>&1; echo "rc=$?"
  cat "$out/gpumem70b.txt"
fi
