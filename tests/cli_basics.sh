#!/usr/bin/env bash
# The qstream command line: version and backends, usage errors, and bad input giving one clear
# line that names the file, a non-zero exit, and nothing half-written.
set -u
bin=${QS_BIN:?run through ctest}
tmp=${QS_TMP:-/tmp}/cli_basics
rm -rf "$tmp"; mkdir -p "$tmp"
fail=0
. "$(dirname "$0")/lib/cli-check.sh"
check "version" 0 '^qstream [0-9]+\.[0-9]+\.[0-9]+ \(backends: cpu' -- "$bin" --version
check "help" 0 'import-gguf' -- "$bin" --help
check "no command" 2 'usage' -- "$bin"
check "unknown command" 2 "unknown command 'frobnicate'" -- "$bin" frobnicate
check "eval: missing model dir" nonzero "$tmp/nope" -- "$bin" eval "$tmp/nope" --text /dev/null
check "logits: missing model dir" nonzero "$tmp/nope" -- "$bin" logits "$tmp/nope" --ids "1 2" -o "$tmp/l.bin"
check "import-gguf: missing file" nonzero "$tmp/nope.gguf" -- "$bin" import-gguf "$tmp/nope.gguf" -o "$tmp/imported"
[ -e "$tmp/imported/model.safetensors" ] && { echo "FAIL import-gguf left output behind"; fail=1; }
printf 'GGUF\x03\x00\x00\x00garbage' > "$tmp/bad.gguf"
check "import-gguf: truncated file" nonzero "bad.gguf" -- "$bin" import-gguf "$tmp/bad.gguf" -o "$tmp/imported2"
[ -e "$tmp/imported2/model.safetensors" ] && { echo "FAIL import-gguf left a model behind"; fail=1; }
# error output is one line
out=$("$bin" eval "$tmp/nope" --text /dev/null 2>&1 >/dev/null); lines=$(printf '%s\n' "$out" | wc -l)
[ "$lines" -eq 1 ] || { echo "FAIL eval error is $lines lines: $out"; fail=1; }
[ $fail -eq 0 ] && echo ok
exit $fail
