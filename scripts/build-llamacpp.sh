#!/usr/bin/env bash
# scripts/build-llamacpp.sh [DIR]: builds llama.cpp's llama-perplexity, llama-tokenize and
# llama-quantize (CPU) into DIR/bin (default .cache/llamacpp), for checking GGUF exports with the
# engine that loads them (bench/gguf_llamacpp.sh). The source is the llama.cpp that the PyPI
# package llama-cpp-python==0.3.36 vendors (its sdist, ~77 MB), since PyPI is what these
# machines reach. Needs cmake and a C++ compiler; about 10 minutes on 2 cores. Idempotent.
set -euo pipefail
dir=${1:-"$(cd "$(dirname "$0")/.." && pwd)/.cache/llamacpp"}
[ -x "$dir/bin/llama-perplexity" ] && [ -x "$dir/bin/llama-tokenize" ] && [ -x "$dir/bin/llama-quantize" ] && exit 0
mkdir -p "$dir"
if [ ! -f "$dir/src/CMakeLists.txt" ]; then
  tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
  python3 -m pip download --quiet --no-deps --no-binary :all: llama-cpp-python==0.3.36 -d "$tmp"
  tar xzf "$tmp"/llama_cpp_python-0.3.36.tar.gz -C "$tmp"
  rm -rf "$dir/src"; mv "$tmp/llama_cpp_python-0.3.36/vendor/llama.cpp" "$dir/src"
fi
cmake -S "$dir/src" -B "$dir/build" -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=OFF -DLLAMA_CURL=OFF \
  -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_SERVER=OFF >/dev/null
cmake --build "$dir/build" --target llama-perplexity llama-tokenize llama-quantize -j"$(nproc)" >/dev/null
mkdir -p "$dir/bin"
cp -a "$dir/build/bin/." "$dir/bin/"
echo "llama.cpp tools in $dir/bin"
