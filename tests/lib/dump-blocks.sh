# tests/lib/dump-blocks.sh - sourced by the export tests (needs $bin and die from the caller).
# dump_blocks OUT_DIR DUMP_DIR BLOCK...: `qstream dump` of each block's seven linears into
# DUMP_DIR/blockB.<linear>.npy, the reference the export checkers compare with.
lins="self_attn.q_proj self_attn.k_proj self_attn.v_proj self_attn.o_proj mlp.gate_proj mlp.up_proj mlp.down_proj"
dump_blocks() {
  local out=$1 d=$2; shift 2; mkdir -p "$d"
  for b in "$@"; do for l in $lins; do "$bin" dump "$out" --block "$b" --tensor "$l" -o "$d/block$b.$l.npy" 2>/dev/null || die "dump $b $l"; done; done
}
