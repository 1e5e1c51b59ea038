#!/usr/bin/env bash
# bench/block70b.sh BUILD_DIR [WORK_DIR] [DEVICE] - seconds per LLaMA-2-70B-shaped block (hidden
# 8192, intermediate 28672, 64 heads / 8 KV heads, bf16 weights, LAYERS blocks) with 128 x 2048
# calibration tokens, for RTN, GPTQ (W4 g128) and QLLM (W4A4, CR + EEC, 10 epochs, K = 1), on
# DEVICE (default cuda); the device memory peak of each run; the GEMM FLOPs each method's block
# costs (a model of its products, below) over its compute seconds, against the cuBLAS bf16 GEMM
# rate (bench_cublas 8192^3: bf16 operands, fp32 accumulation) measured in the same run, with
# the backend's own gemm op on fp32 operands (bench_gemm, the same shape) beside it (on a CPU,
# where there is no bench_cublas, bench_gemm is the baseline); and the hours 80 blocks would
# take (with at most 1/20 more for --act-checkpoints auto; the one written after the first block is
# measured apart). Environment: NS (128), SL (2048), EPOCHS (10), METHODS ("rtn gptq qllm"), SHAPE
# (70b; gen_model's tiny to try the script on a CPU), LAYERS (2), METHOD_S (unset: each method's
# run is cut after this many seconds, and its row comes from the blocks that finished). Each
# method's row prints as soon as its run ends, so a call cut short keeps the rows before it.
# FLOP model per block, T = NS x SL tokens, P = the linears' weights, A = 4 nh hd (SL + 1) / 2
# (causal scores and outputs per token): a forward F = T (2 P + A); GPTQ = its four truncated
# stage forwards + one forward + the Hessians 2 T (in_qkv^2 + in_o^2 + in_gu^2 + in_down^2);
# QLLM = (2 + 3 EPOCHS) F (the full-precision targets, the advance, and per epoch a forward and a
# backward of about twice its cost); DL-QAT (METHODS may name dlqat: W4 g128, EPOCHS, K = 1) =
# (2 + 4 EPOCHS) F (its backward forms each linear's weight gradient too); SliderQuant (slider:
# W4A4, EPOCHS, smoothing on) trains windows (quant/slider.c's schedule, W(L) the sum of the
# windows' sizes for L blocks: 4 for 2 blocks, 166 for 80), so its LAYERS blocks cost
# (2 LAYERS + 3 EPOCHS W(LAYERS)) F (each block's full-precision target and quantized advance once,
# per epoch a window's forward and backward), its row's s/block is that over LAYERS, and its 80
# blocks are projected by the same model, (2 80 + 3 EPOCHS W(80)) / (2 LAYERS + 3 EPOCHS W(LAYERS)). The host work (GPTQ's column loop, shard writes) is in the
# seconds and not in the FLOPs.
set -euo pipefail
build=${1:?usage: bench/block70b.sh BUILD_DIR [WORK_DIR] [DEVICE]}
work=${2:-$(mktemp -d)}
dev=${3:-cuda}
NS=${NS:-128} SL=${SL:-2048} EPOCHS=${EPOCHS:-10} METHODS=${METHODS:-"rtn gptq qllm"} SHAPE=${SHAPE:-70b} LAYERS=${LAYERS:-2}
model=$work/llama-$SHAPE-${LAYERS}blocks
[ -e "$model/config.json" ] || "$build/bench/gen_model" "$model" --shape "$SHAPE" --layers "$LAYERS" --shards 1 --dtype bf16
best() { sed -n 's/.*best \([0-9.]*\) TFLOP.*/\1/p'; }
oprate=$("$build/bench/bench_gemm" "$dev" 8192 8192 8192 5 | tee /dev/stderr | best)
rate=$oprate base="the backend's gemm op (bench_gemm 8192^3, best of 5)"
if [ "$dev" = cuda ] && [ -x "$build/bench/bench_cublas" ]; then
  rate=$("$build/bench/bench_cublas" 8192 8192 8192 10 | tee /dev/stderr | best)
  base="cuBLAS bf16 (bench_cublas 8192^3, best of 10; the backend's gemm op on fp32 operands: $oprate)"
fi
cal=(--calib random --nsamples "$NS" --seqlen "$SL")
# the host's peak RSS where GNU time is there (a bare GPU machine may lack it)
timer=(); [ -x /usr/bin/time ] && timer=(/usr/bin/time -v)
cut=(); [ -n "${METHOD_S:-}" ] && cut=(timeout "$METHOD_S")
# row M RC: method M's row of the table from its log (RC: its exit status; 124: cut short)
row() {
  python3 - "$work" "$rate" "$NS" "$SL" "$EPOCHS" "$1" "$model" "$2" <<'PY'
import json, re, sys
work, rate, NS, SL, E, m = sys.argv[1], float(sys.argv[2] or 0), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), sys.argv[6]
rc = int(sys.argv[8])
cfg = json.load(open(sys.argv[7] + "/config.json"))
nb = cfg["num_hidden_layers"]
H, I, nh = cfg["hidden_size"], cfg["intermediate_size"], cfg["num_attention_heads"]
nkv, hd = cfg.get("num_key_value_heads", nh), H // nh
T, Q, KV = NS * SL, nh * hd, nkv * hd
f_qkv, f_o, f_gu, f_down = 2 * T * H * (Q + 2 * KV), 2 * T * Q * H, 4 * T * H * I, 2 * T * I * H
f_att = T * 4 * nh * hd * (SL + 1) / 2
F = f_qkv + f_att + f_o + f_gu + f_down
def windows(L):  # the sum of the sizes of quant/slider.c's windows for L blocks
    w = [(0, j) for j in range(min(4, L))] + [(j, j + 1) for j in range(3, L - 4)] + [(j, L - 1) for j in range(max(L - 4, 0), L)]
    return sum(b - a + 1 for i, (a, b) in enumerate(w) if i == 0 or w[i - 1] != (a, b))
units = lambda L: 2 * L + 3 * E * windows(L)  # slider's block forwards for L blocks
flops = {"rtn": 0,
         "gptq": (f_qkv + f_att) + (f_qkv + f_att + f_o) + (f_qkv + f_att + f_o + f_gu) + F + 2 * T * (3 * H * H + I * I),
         "qllm": (2 + 3 * E) * F, "dlqat": (2 + 4 * E) * F, "slider": units(nb) * F / nb}
log = open(f"{work}/{m}.log").read()
comp = [float(x) for x in re.findall(r"compute ([0-9.]+) s", log)]
peak = re.search(r"memory peak ([0-9.]+) MiB", log)
rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", log)
# the block's work without the activation checkpoint written after the first block (with
# --act-checkpoints auto a long run spends at most 1/20 of its time on them: the projection
# adds that)
ck = re.search(r"activation checkpoints: (\d+) written in ([0-9.]+) s", log)
ck_s = float(ck.group(2)) if ck else 0.0
s = (sum(comp) - ck_s) / len(comp) if comp else float("nan")
# 80 blocks: slider's windows per block differ from LAYERS' (the FLOP model above)
s80 = 80 * s * (units(80) / 80 / (units(len(comp)) / len(comp)) if m == "slider" and comp else 1)
tf = flops[m] / s / 1e12 if flops[m] and s > 0 else 0
host = f" (host RSS {int(rss.group(1)) / 1e6:.1f} GB)" if rss else ""
# cut short: the blocks that finished, their activation checkpoints inside their compute
cut = f"; cut short after {len(comp)} of {nb} block(s)" if rc else ""
print(f"| {m} | {s:.1f} | {peak.group(1) + ' MiB' if peak else 'n/a'}{host} | "
      f"{tf:.2f} | {100 * tf / rate if rate and tf else 0:.0f}% | {s80 * (1 + (1 / 20 if ck else 0)) / 3600:.2f} h | "
      f"{ck.group(1) + ' in ' + ck.group(2) + ' s' if ck else 'none'}{cut} |")
PY
}

echo "device $dev; GEMM rate $rate TFLOP/s: $base; calibration $NS x $SL tokens; $LAYERS block(s)${METHOD_S:+; each method cut at $METHOD_S s}"
echo "| method | s/block | device peak | est. TFLOP/s | of GEMM rate | 80 blocks | activation checkpoints |"
echo "| --- | --- | --- | --- | --- | --- | --- |"
for m in $METHODS; do
  case $m in
    rtn) args=(--method rtn --wbits 4 --group 128) ;;
    gptq) args=(--method gptq --wbits 4 --group 128 "${cal[@]}") ;;
    qllm) args=(--method qllm --wbits 4 --abits 4 --epochs "$EPOCHS" --blocks-per-group 1 "${cal[@]}") ;;
    dlqat) args=(--method dlqat --wbits 4 --group 128 --epochs "$EPOCHS" "${cal[@]}") ;;
    slider) args=(--method slider --wbits 4 --abits 4 --epochs "$EPOCHS" "${cal[@]}") ;;
    *) echo "bench/block70b.sh: unknown method $m (rtn, gptq, qllm, dlqat, slider)" >&2; exit 2 ;;
  esac
  rm -rf "$work/out-$m"
  rc=0
  "${timer[@]}" "${cut[@]}" "$build/qstream" quantize "$model" -o "$work/out-$m" --device "$dev" "${args[@]}" \
    --progress-lines > "$work/$m.log" 2>&1 || rc=$?
  # a row from the blocks that finished: a method cut short (rc 124) or failed still gives them
  [ "$rc" -eq 0 ] || [ "$rc" -eq 124 ] || { echo "$m failed (rc $rc):"; grep -v "^\s" "$work/$m.log" | tail -3; }
  row "$m" "$rc"
done
echo "QLLM paper (Table: LLaMA-2-70B): 9.05 A100-hours"
