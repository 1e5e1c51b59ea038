# bench/methods70b.sh - sourced by bench/gpumem70b.sh and bench/hostmem70b.sh: the quantize
# flags of each method they measure on a 70B block. method_args M sets the array args.
method_args() {
  case $1 in
    gptq) args=(--method gptq --wbits 4 --group 128) ;;
    qllm-eec) args=(--method qllm --wbits 4 --abits 4 --cr off --epochs 1 --blocks-per-group 1) ;;
    qllm-cr) args=(--method qllm --wbits 4 --abits 4 --eec off) ;;
    qllm-cr-eec) args=(--method qllm --wbits 4 --abits 4 --cr-candidates 4 --epochs 1 --blocks-per-group 1) ;;
    dlqat) args=(--method dlqat --wbits 4 --group 128 --epochs 1 --blocks-per-group 1) ;;
    slider) args=(--method slider --wbits 4 --abits 4 --epochs 1) ;;
    *) echo "bench: unknown method $1 (gptq, qllm-eec, qllm-cr, qllm-cr-eec, dlqat, slider)" >&2; return 1 ;;
  esac
}
