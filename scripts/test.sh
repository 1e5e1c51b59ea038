#!/usr/bin/env bash
# The README's second command (and CI's): install what is missing, build with warnings as
# errors, run every test; then a clang build with AddressSanitizer + UndefinedBehaviorSanitizer
# runs every test again plus the libFuzzer harnesses of each parser for a bounded time.
set -euo pipefail
cd "$(dirname "$0")/.."
QS_DEPS_CLANG=1 scripts/deps.sh
jobs=$(nproc)
scripts/build.sh build -DQS_WERROR=ON
scripts/fetch-default-model.sh build/qstream .cache
(cd build && ctest --output-on-failure -j"$jobs")
# sanitized parsers + fuzzing (CPU only; CUDA is compiled in the main build above)
CC=clang scripts/build.sh build-asan -DQS_WERROR=ON -DQS_CUDA=OFF -DCMAKE_BUILD_TYPE=Debug \
  -DQS_SANITIZE=address,undefined -DQS_FUZZ=ON -DQS_FUZZ_SECONDS="${QS_FUZZ_SECONDS:-20}"
# the end-to-end SmolLM2 quantization tests ran above; under the sanitizers (a Debug build,
# several times slower) their units (test_gptq, test_reassembly, ...) and the rest run instead
(cd build-asan && ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 \
   ctest --output-on-failure -j"$jobs" -E '^cli_(gptq|qllm|export)$')
