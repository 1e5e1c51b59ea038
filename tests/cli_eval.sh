#!/usr/bin/env bash
# qstream eval / logits on stories260k: the --json and text outputs, determinism run to run,
# --max-windows, the raw logits file, and clear one-line errors (missing model dir, text shorter
# than one window, bad ids, a model without a tokenizer), the seqlen > max_position warning.
set -u
bin=${QS_BIN:?run through ctest}
model=${QS_SHARED:?run through ctest}/models/stories260k
tmp=${QS_TMP:-/tmp}/cli_eval
rm -rf "$tmp"; mkdir -p "$tmp"
fail=0
. "$(dirname "$0")/lib/cli-check.sh"
# 300 seeded pseudo-random ids (an LCG, no external tools)
x=11; ids=""
for i in $(seq 300); do x=$(( (x * 1103515245 + 12345) % 2147483648 )); ids="$ids $(( (x >> 16) % 512 ))"; done
echo "$ids" > "$tmp/ids.txt"
check "eval --json" 0 '^\{"ppl": [0-9.]+, "nll": [0-9.]+, "tokens": 252, "windows": 4, "seqlen": 64, "seconds"' -- \
  "$bin" eval "$model" --ids-file "$tmp/ids.txt" --seqlen 64 --json --threads 2
a=$("$bin" eval "$model" --ids-file "$tmp/ids.txt" --seqlen 64 --json | sed 's/, "seconds.*//')
b=$("$bin" eval "$model" --ids-file "$tmp/ids.txt" --seqlen 64 --json --threads 1 | sed 's/, "seconds.*//')
[ "$a" = "$b" ] || { echo "FAIL eval not deterministic: $a vs $b"; fail=1; }
check "eval text" 0 '^ppl [0-9.]+ \(tokens 126, windows 2, seqlen 64, [0-9.]+ s, [0-9]+ tok/s\)$' -- \
  "$bin" eval "$model" --ids-file "$tmp/ids.txt" --seqlen 64 --max-windows 2
check "eval: text shorter than a window" 1 'fewer than one window of 512' -- \
  "$bin" eval "$model" --ids-file "$tmp/ids.txt" --seqlen 512
check "eval: seqlen over max positions warns" 1 'warning: seqlen 1024 is over the model.s max_position_embeddings 512' -- \
  "$bin" eval "$model" --ids-file "$tmp/ids.txt" --seqlen 1024
check "eval: missing model dir" 1 "$tmp/nope: not a model directory" -- "$bin" eval "$tmp/nope" --ids-file "$tmp/ids.txt"
check "eval: no tokenizer" 1 'tokenizer' -- "$bin" eval "$model" --text "$tmp/ids.txt" --seqlen 64
echo "1 2 x3" > "$tmp/bad_ids.txt"
check "eval: bad ids" 1 "bad_ids.txt: not a token id at byte 4" -- "$bin" eval "$model" --ids-file "$tmp/bad_ids.txt"
echo "1 2 512 3" > "$tmp/big_ids.txt"
check "eval: id outside vocabulary" 1 "token id 512 at position 2 is outside the vocabulary of 512" -- \
  "$bin" eval "$model" --ids-file "$tmp/big_ids.txt" --seqlen 2
check "eval: both inputs" 2 'one of --text or --ids-file' -- "$bin" eval "$model" --ids-file a --text b
# logits: [16, 512] float32, the reference's first logit at position 0
check "logits" 0 'position 0: 1\.9738[0-9]+ 2\.6549' -- \
  "$bin" logits "$model" --ids "1 67 89 120 300 45 7 260 511 2 33 400 150 99 12 88" -o "$tmp/logits.bin"
size=$(stat -c %s "$tmp/logits.bin" 2>/dev/null || echo 0)
[ "$size" -eq $((16 * 512 * 4)) ] || { echo "FAIL logits file is $size bytes"; fail=1; }
check "logits: bad ids" 2 '' -- "$bin" logits "$model" -o "$tmp/l2.bin"
check "logits: id outside vocabulary" 1 'outside the vocabulary' -- "$bin" logits "$model" --ids "1 999" -o "$tmp/l3.bin"
[ -e "$tmp/l3.bin" ] && { echo "FAIL logits left a file behind after an error"; fail=1; }
[ $fail -eq 0 ] && echo ok
exit $fail
