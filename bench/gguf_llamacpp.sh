#!/usr/bin/env bash
# bench/gguf_llamacpp.sh BUILD_DIR [WORK_DIR]: qstream's GGUF exports run by llama.cpp itself,
# against llama.cpp's own quantizer on the same model. SmolLM2-135M (the quick start's model,
# whose "full precision" is its PyPI GGUF, Q4_1, dequantized) is quantized by qstream at W4 g32
# asymmetric with RTN and with GPTQ (calibration: NS x SL tokens of ../shared's wikitext2-valid)
# and exported to GGUF (Q4_1 blocks, embedding Q8_0: the source's own, given back exactly); llama-quantize makes Q4_0, Q4_1 and Q4_K_M
# from the same source. Every file is evaluated by llama-perplexity (its protocol: windows of
# CTX tokens, the second half of each scored) on the first CHARS characters of wikitext2-test,
# and qstream's own runs by `qstream eval` (all of each window scored) for the ratio between the
# two protocols. Also checks that llama-tokenize gives qstream's ids. llama.cpp comes from
# scripts/build-llamacpp.sh (LLAMACPP, default .cache/llamacpp). Environment: NS (128), SL (512),
# CTX (512), CHARS (200000).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=$(cd "${1:?usage: bench/gguf_llamacpp.sh BUILD_DIR [WORK_DIR]}" && pwd)
work=${2:-$(mktemp -d)}
NS=${NS:-128} SL=${SL:-512} CTX=${CTX:-512} CHARS=${CHARS:-200000}
lc=${LLAMACPP:-$root/.cache/llamacpp}
"$root/scripts/build-llamacpp.sh" "$lc"
q=$build/qstream
src=$root/.cache/smollm2 gguf=$root/.cache/SmolLM2-135M-Instruct.Q4_1.gguf
[ -f "$src/config.json" ] || "$root/scripts/fetch-default-model.sh" "$q" "$root/.cache"
mkdir -p "$work"; cd "$work"
head -c "$CHARS" "$root/../shared/data/wikitext2-test.raw.txt" >text.txt
calib=$root/../shared/data/wikitext2-valid.tokens.txt
[ -d rtn ] || "$q" quantize "$src" -o rtn --method rtn --wbits 4 --group 32 --quiet
[ -d gptq ] || "$q" quantize "$src" -o gptq --method gptq --wbits 4 --group 32 --calib "$calib" --nsamples "$NS" --seqlen "$SL" --quiet
for r in rtn gptq; do "$q" export $r --format gguf --dtype f16 --token-embedding-type q8_0 --force -o qs-$r.gguf 2>/dev/null; done
for t in Q4_0 Q4_1 Q4_K_M; do "$lc/bin/llama-quantize" --allow-requantize "$gguf" lc-$t.gguf $t >lc-$t.log 2>&1; done
"$lc/bin/llama-tokenize" -m qs-rtn.gguf -f text.txt --ids --log-disable 2>/dev/null | tail -1 | tr -d '[],' | tr ' ' '\n' | grep -v '^$' >ids-lc.txt
"$q" tokenize rtn --text text.txt 2>/dev/null | tr ' ' '\n' | grep -v '^$' >ids-qs.txt
echo "tokens of the text: llama.cpp $(wc -l <ids-lc.txt), qstream $(wc -l <ids-qs.txt): $(cmp -s ids-lc.txt ids-qs.txt && echo the same ids || echo DIFFERENT ids)"
lppl() { "$lc/bin/llama-perplexity" -m "$1" -f text.txt -c "$CTX" -t "$(nproc)" 2>&1 | sed -nE 's/.*Final estimate: PPL = ([0-9.]+) .*/\1/p'; }
qppl() { "$q" eval "$1" --text text.txt --seqlen "$CTX" --json | sed -E 's/.*"ppl": ([0-9.]+).*/\1/'; }
echo "| model | file | MiB | llama-perplexity (ctx $CTX) | qstream eval |"
echo "| --- | --- | --- | --- | --- |"
row() { echo "| $1 | $2 | $(( $(stat -c %s "$2") / 1048576 )) | $(lppl "$2") | ${3:-} |"; }
row "source (Q4_1, PyPI)" "$gguf" "$(qppl "$src")"
for t in Q4_0 Q4_1 Q4_K_M; do row "llama-quantize $t" lc-$t.gguf; done
row "qstream RTN W4 g32 -> Q4_1" qs-rtn.gguf "$(qppl rtn)"
row "qstream GPTQ W4 g32 ($NS x $SL) -> Q4_1" qs-gptq.gguf "$(qppl gptq)"
