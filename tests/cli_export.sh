#!/usr/bin/env bash
# qstream export: the gptq layout checked by an independent unpacker written from the format's
# description (tests/tools/check_gptq_export.py, standard library only) against `qstream dump`,
# for 2, 3, 4 and 8 bits, symmetric and asymmetric, per group and per channel, and GPTQ with
# act-order (g_idx); fakequant evaluates to exactly the perplexity of the run it came from; bad
# requests are one-line errors that leave nothing behind.
set -u
bin=${QS_BIN:?run through ctest}
src=${QS_SRC:?}
shared=${QS_SHARED:?}
smol=${QS_SMOLLM_DIR:?}
gen=$(dirname "$bin")/bench/gen_model
tmp=${QS_TMP:-/tmp}/cli_export
rm -rf "$tmp"; mkdir -p "$tmp"
fail=0
die() { echo "FAIL: $*"; fail=1; }
. "$src/tests/lib/cli-check.sh"
lins="self_attn.q_proj self_attn.k_proj self_attn.v_proj self_attn.o_proj mlp.gate_proj mlp.up_proj mlp.down_proj"
dump_blocks() { # OUT_DIR DUMP_DIR BLOCK...
  local out=$1 d=$2; shift 2; mkdir -p "$d"
  for b in "$@"; do for l in $lins; do "$bin" dump "$out" --block "$b" --tensor "$l" -o "$d/block$b.$l.npy" 2>/dev/null || die "dump $b $l"; done; done
}
"$gen" "$tmp/tiny" --shape tiny --layers 2 --dtype bf16 >/dev/null || { echo "FAIL: gen_model"; exit 1; }
i=0
while IFS='|' read -r qargs eargs <&3; do
  i=$((i + 1))
  # shellcheck disable=SC2086
  "$bin" quantize "$tmp/tiny" -o "$tmp/q$i" $qargs --quiet || { die "quantize $i ($qargs)"; continue; }
  # shellcheck disable=SC2086
  "$bin" export "$tmp/q$i" --format gptq $eargs -o "$tmp/hf$i" 2>/dev/null || { die "export $i ($qargs | $eargs)"; continue; }
  dump_blocks "$tmp/q$i" "$tmp/d$i" 0 1
  python3 "$src/tests/tools/check_gptq_export.py" "$tmp/hf$i" "$tmp/d$i" 0 1 || die "gptq layout $i ($qargs | $eargs)"
done 3<<'CASES'
--method rtn --wbits 4 --group 64 --sym|
--method rtn --wbits 8 --group -1 --sym|
--method rtn --wbits 2 --group 64|--gptq-v2
--method gptq --wbits 4 --group 64 --sym --act-order --calib random --nsamples 4 --seqlen 64|
CASES
grep -q '"desc_act": true' "$tmp/hf4/config.json" || die "act-order export does not say desc_act"
# 3 bits on the real model: v1 cannot hold its zero points of 0 (a clear error, nothing written);
# gptq_v2 holds everything
"$bin" quantize "$smol" -o "$tmp/s3" --method rtn --wbits 3 --group 128 --quiet || die "quantize SmolLM2 W3"
check "v1 refuses a zero point of 0" 1 "gptq-v2" -- "$bin" export "$tmp/s3" --format gptq -o "$tmp/s3v1"
[ -e "$tmp/s3v1" ] && die "a refused export left $tmp/s3v1 behind"
"$bin" export "$tmp/s3" --format gptq --gptq-v2 -o "$tmp/s3v2" 2>/dev/null || die "export SmolLM2 W3 v2"
dump_blocks "$tmp/s3" "$tmp/ds3" 0 29
python3 "$src/tests/tools/check_gptq_export.py" "$tmp/s3v2" "$tmp/ds3" 0 29 || die "SmolLM2 W3 gptq_v2 layout"
# fakequant: the same perplexity bits as the run itself
st=$shared/models/stories260k
ids="1 67 89 120 300 45 7 260 511 2 33 400 150 99 12 88 17 230 41 5 66 300 2 9 14 77 310 120 500 3 8 91"
for k in 1 2 3; do echo "$ids"; done > "$tmp/ids.txt"
"$bin" quantize "$st" -o "$tmp/st" --method rtn --wbits 3 --group 32 --quiet || die "quantize stories"
"$bin" export "$tmp/st" --format fakequant -o "$tmp/stfq" 2>/dev/null || die "fakequant export"
a=$("$bin" eval "$tmp/st" --ids-file "$tmp/ids.txt" --seqlen 32 --json | sed -E 's/.*"ppl": ([0-9.]+).*/\1/')
b=$("$bin" eval "$tmp/stfq" --ids-file "$tmp/ids.txt" --seqlen 32 --json | sed -E 's/.*"ppl": ([0-9.]+).*/\1/')
echo "stories260k W3 g32: ppl from the shards $a, from the fakequant export $b"
[ -n "$a" ] && [ "$a" = "$b" ] || die "fakequant perplexity $b differs from the run's $a"
# bad requests
"$bin" quantize "$tmp/tiny" -o "$tmp/wa" --method rtn --wbits 4 --group 64 --abits 8 --quiet || die "quantize W4A8"
check "gptq of a W4A8 run" 1 "weight-only" -- "$bin" export "$tmp/wa" --format gptq -o "$tmp/wa_hf"
[ -e "$tmp/wa_hf" ] && die "refused export left files"
cp -r "$tmp/q1" "$tmp/part"; rm "$tmp/part/blocks/block-0001.qsh"
python3 - "$tmp/part/manifest.json" <<'PY'
import json, sys
p = sys.argv[1]; m = json.load(open(p)); m["blocks"] = [b for b in m["blocks"] if b["block"] != 1]; json.dump(m, open(p, "w"))
PY
check "export of an unfinished run" 1 "not finished" -- "$bin" export "$tmp/part" --format gptq -o "$tmp/part_hf"
check "export into a non-empty directory" 1 "not empty" -- "$bin" export "$tmp/q1" --format gptq -o "$tmp/hf1"
check "unknown format" 1 "gptq or fakequant" -- "$bin" export "$tmp/q1" --format gguf -o "$tmp/x"
[ $fail -eq 0 ] && echo ok
exit $fail
