#!/usr/bin/env bash
# The README's first command: install what is missing, build, fetch the default model
# (SmolLM2-135M), and print its perplexity on text every Debian machine has.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
scripts/build.sh build
scripts/fetch-default-model.sh build/qstream .cache
# evaluation text: the GNU GPL v3 from base-files (present on every Debian system), or this README
text=/usr/share/common-licenses/GPL-3
[ -r "$text" ] || text=README.md
echo "qstream: perplexity of SmolLM2-135M (full precision) on $text, seqlen 512"
build/qstream eval .cache/smollm2 --text "$text" --seqlen 512
