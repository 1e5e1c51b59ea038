#!/usr/bin/env bash
# scripts/fetch-test-tokenizers.sh [CACHE_DIR]
# Fetches a real SentencePiece BPE tokenizer for the tokenizer tests: Mistral-7B v0.1's
# tokenizer.model (32000 pieces, byte fallback; the LLaMA-1/2 layout), shipped inside the PyPI
# package mistral-common==1.13.1 (a 6.6 MB wheel). Puts it at CACHE_DIR/mistral-spm/tokenizer.model
# (CACHE_DIR defaults to .cache beside the repository root). Idempotent; exits 0 with a note
# when PyPI cannot be reached (the test then reports the case as missing).
set -euo pipefail
cache=${1:-"$(cd "$(dirname "$0")/.." && pwd)/.cache"}
dst="$cache/mistral-spm/tokenizer.model"
want=dadfd56d766715c6  # first 16 hex digits of the file's sha256, checked below
[ -s "$dst" ] && exit 0
mkdir -p "$cache/mistral-spm"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
echo "qstream: downloading Mistral's tokenizer.model (mistral-common==1.13.1 from PyPI, ~7 MB)"
if ! python3 -m pip download --quiet --no-deps mistral-common==1.13.1 -d "$tmp"; then
  echo "qstream: could not download mistral-common; the SentencePiece tokenizer test will fail" >&2
  exit 0
fi
python3 - "$tmp"/mistral_common-1.13.1-py3-none-any.whl "$dst.part" <<'PY'
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z:
    open(sys.argv[2], "wb").write(z.read("mistral_common/data/tokenizer.model.v1"))
PY
got=$(sha256sum "$dst.part" | cut -c1-16)
if [ "$got" != "$want" ]; then
  echo "qstream: tokenizer.model has sha256 $got..., expected $want..." >&2
  rm -f "$dst.part"
  exit 1
fi
mv "$dst.part" "$dst"
