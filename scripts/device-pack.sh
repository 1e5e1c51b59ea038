#!/usr/bin/env bash
# scripts/device-pack.sh - prepare a GPU check for a machine that cannot install packages (the
# CUDA toolkit is there, Debian's libraries are not): builds build-cuda/ for sm_90 (H100 / H200)
# and copies into .devlibs/ (git-ignored, well under 64 MiB) the programs the check runs, the
# shared libraries they link from outside CUDA (ldd), stories260k and slices of the wikitext
# files from ../shared. Then, on that machine, from the checkout with .devlibs carried:
#   scripts/device-check.sh OUT [STEPS]   (STEPS of "ops e2e bench": ops vs CPU in three GEMM
#                                          maths, end to end, benchmarks; one call <= 10 minutes)
# SmolLM2 (the GGUF, 98 MB) is over one call's 64 MiB, so it is split into .devgguf/1 and
# .devgguf/2 (git-ignored, under 50 MiB each): carry each in its own call first (an ignored path
# not named in a later call's carry stays on the warm machine), then the e2e step assembles and
# imports it (QS_SMOLLM_DIR) and runs cli_cuda on the issue's model. The end-to-end test's cpu
# side (its cpu runs and their perplexities, minutes on that machine's CPU) is measured here
# once, with the same binary, model and data, into .devlibs/cpu-ref.txt (kept in .cache/devref
# between packs while its fingerprint holds; QS_PACK_REF=0 skips it): there the GPU's runs are
# compared with it.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/build.sh build-cuda -DQS_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 >/dev/null
d=.devlibs
rm -rf "$d"; mkdir -p "$d/bin" "$d/lib" "$d/models" "$d/data"
cp build-cuda/qstream build-cuda/tests/test_backend_ops build-cuda/tests/test_block_backward build-cuda/tests/test_gptq \
   build-cuda/bench/bench_gemm build-cuda/bench/bench_cublas \
   build-cuda/bench/gen_model "$d/bin/"
for b in "$d"/bin/*; do
  ldd "$b" | awk '/=> \// {print $3}' | grep -Ev '/(libc|libm|libpthread|libdl|librt|ld-linux[^/]*|libcuda|libcudart|libcublas[^/]*|libcusolver[^/]*|libcusparse|libnvJitLink[^/]*|libstdc\+\+|libgcc_s)\.so' |
    while read -r l; do cp -nL "$l" "$d/lib/"; done || true # bench_cublas links nothing outside CUDA
done
cp -r ../shared/models/stories260k "$d/models/"
head -c 300000 ../shared/data/wikitext2-valid.tokens.txt > "$d/data/wikitext2-valid.tokens.txt"
head -c 300000 ../shared/data/wikitext2-test.raw.txt > "$d/data/wikitext2-test.raw.txt"
du -sh "$d"
gguf=.cache/SmolLM2-135M-Instruct.Q4_1.gguf
[ -s "$gguf" ] || scripts/fetch-default-model.sh build-cuda/qstream >/dev/null
rm -rf .devgguf; mkdir -p .devgguf/1 .devgguf/2
half=$(( ($(stat -c %s "$gguf") + 1) / 2 ))
head -c "$half" "$gguf" > .devgguf/1/part; tail -c +$((half + 1)) "$gguf" > .devgguf/2/part
sha256sum < "$gguf" | cut -d' ' -f1 > .devgguf/2/sha256
du -sh .devgguf/1 .devgguf/2
if [ "${QS_PACK_REF:-1}" = 1 ]; then
  ref=.cache/devref
  mkdir -p "$ref"
  [ -s "$ref/smol/model.safetensors" ] &&
    [ "$(cat "$ref/smol.gguf.sha256" 2>/dev/null)" = "$(cat .devgguf/2/sha256)" ] ||
    { rm -rf "$ref/smol" && "$d/bin/qstream" import-gguf "$gguf" -o "$ref/smol" >/dev/null &&
      cp .devgguf/2/sha256 "$ref/smol.gguf.sha256"; }
  e2e=(env QS_BIN="$PWD/$d/bin/qstream" QS_SHARED="$PWD/$d" QS_SMOLLM_DIR="$PWD/$ref/smol" QS_TMP=/tmp/qs-devref
       QS_E2E_CPU_REF="$PWD/$ref/cpu-ref.txt")
  if "${e2e[@]}" QS_E2E_REF_CHECK=1 bash tests/cli_cuda.sh | grep -q "^cpu figures from"; then
    echo "cpu side of the end-to-end test: $ref/cpu-ref.txt still holds"
  else
    echo "cpu side of the end-to-end test on SmolLM2 (minutes)"
    "${e2e[@]}" QS_E2E_CPU_ONLY=1 bash tests/cli_cuda.sh
  fi
  cp "$ref/cpu-ref.txt" "$d/cpu-ref.txt"
fi
