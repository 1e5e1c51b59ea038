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
# imports it (QS_SMOLLM_DIR) and runs cli_cuda on the issue's model.
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
