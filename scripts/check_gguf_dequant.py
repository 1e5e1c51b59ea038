#!/usr/bin/env python3
"""Cross-check of qstream's GGUF dequantization (outside CI; needs the pip packages gguf, numpy).

Compares tensors of qstream's imported model.safetensors with the gguf package's own
dequantizer (gguf.quants.dequantize) applied to the same GGUF. qstream un-permutes the Q/K rows
from llama.cpp's interleaved-RoPE layout; this script applies that permutation again to
qstream's tensor before comparing, so the comparison is of the dequantized values only.
Prints the max abs difference per tensor; exit 1 when any exceeds --tol.

With --constants it also prints the raw dequantized values (GGUF order, ne[0] fastest) that
tests/test_gguf.c uses as spot-check constants for the default model, and the figures of the
K-quant known-answer test (blocks filled by the LCG that tests/test_gguf.c uses, dequantized here
by gguf.quants.dequantize).

usage: check_gguf_dequant.py [--gguf FILE] [--model-dir DIR] [--tensors a,b,...] [--all]
                             [--constants]
"""
import argparse, json, os, struct, sys

import numpy as np

HF = {"attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
      "attn_output": "self_attn.o_proj", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
      "ffn_down": "mlp.down_proj", "attn_norm": "input_layernorm",
      "ffn_norm": "post_attention_layernorm"}

DEFAULT_TENSORS = ["token_embd.weight", "output_norm.weight", "blk.0.attn_q.weight",
                   "blk.0.attn_k.weight", "blk.0.attn_v.weight", "blk.7.ffn_down.weight",
                   "blk.29.ffn_gate.weight", "blk.29.attn_norm.weight"]

# (tensor, first element) pairs printed by --constants, in GGUF order
# (elements 12..19 of a 32-element block span the low/high nibble boundary of Q4_1)
CONSTANTS = [("token_embd.weight", 1000 * 576), ("blk.0.attn_q.weight", 12),
             ("blk.7.ffn_down.weight", 1536 * 100 + 64 + 12), ("output_norm.weight", 0)]


def hf_name(name):
    if name == "token_embd.weight": return "model.embed_tokens.weight"
    if name == "output_norm.weight": return "model.norm.weight"
    if name == "output.weight": return "lm_head.weight"
    _, layer, kind, suffix = name.split(".")
    return f"model.layers.{layer}.{HF[kind]}.{suffix}"


def read_safetensors(path):
    """name -> float32 array (memory-mapped); F32 only, which is what import-gguf writes"""
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
    mm = np.memmap(path, dtype=np.uint8, mode="r")
    out = {}
    for name, info in header.items():
        if name == "__metadata__": continue
        assert info["dtype"] == "F32", (name, info["dtype"])
        a, b = info["data_offsets"]
        out[name] = mm[8 + n + a: 8 + n + b].view(np.float32).reshape(info["shape"])
    return out


def interleave_rows(w, n_head):
    """HF rotate-half rows -> llama.cpp's layout: within a head, HF row i (i < half) goes to
    stored row 2i and HF row i + half to stored row 2i + 1."""
    rows = w.shape[0]
    hd = rows // n_head
    half = hd // 2
    src = np.empty(rows, dtype=np.int64)
    for h in range(n_head):
        for i in range(half):
            src[h * hd + 2 * i] = h * hd + i
            src[h * hd + 2 * i + 1] = h * hd + i + half
    return w[src]


# K-quant known-answer blocks: (type, offsets of the f16 d / dmin fields); two blocks each
KQUANTS = [("Q2_K", [80, 82]), ("Q3_K", [108]), ("Q4_K", [0, 2]), ("Q5_K", [0, 2]), ("Q6_K", [208])]


def kquant_constants():
    import gguf
    from gguf.quants import dequantize
    for name, offs in KQUANTS:
        t = gguf.GGMLQuantizationType[name]
        bs, bb = gguf.GGML_QUANT_SIZES[t]
        x = (12345 + int(t)) & (2**64 - 1)
        raw = bytearray()
        for _ in range(2 * bb):  # the same LCG as tests/test_gguf.c (top byte of the state)
            x = (x * 6364136223846793005 + 1442695040888963407) & (2**64 - 1)
            raw.append(x >> 56)
        for b in range(2):
            for j, o in enumerate(offs):  # d = 0x2C00 + b (about 1/16), dmin = 0x2800 + 3b
                struct.pack_into("<H", raw, b * bb + o, (0x2C00 + b) if j == 0 else (0x2800 + 3 * b))
        y = dequantize(np.frombuffer(bytes(raw), np.uint8), t).astype(np.float32).reshape(-1).astype(np.float64)
        w = (np.arange(y.size) % 7) + 1
        print("    {QS_GGML_%s, %.17g, %.17g, %.9gf, %.9gf}," % (name, y.sum(), (y * w).sum(), y[1], y[300]))


def main():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    ap = argparse.ArgumentParser()
    ap.add_argument("--gguf", default=os.path.join(root, ".cache/SmolLM2-135M-Instruct.Q4_1.gguf"))
    ap.add_argument("--model-dir", default=os.path.join(root, ".cache/smollm2"))
    ap.add_argument("--tensors", default=",".join(DEFAULT_TENSORS))
    ap.add_argument("--all", action="store_true", help="every tensor of the file")
    ap.add_argument("--tol", type=float, default=0.0)
    ap.add_argument("--constants", action="store_true")
    args = ap.parse_args()

    from gguf import GGUFReader
    from gguf.quants import dequantize
    r = GGUFReader(args.gguf)

    def scalar(k):
        f = r.fields[k]
        return f.parts[f.data[0]][0]

    n_head = int(scalar("llama.attention.head_count"))
    n_kv = int(scalar("llama.attention.head_count_kv"))
    tensors = {t.name: t for t in r.tensors}

    if args.constants:
        kquant_constants()
        for name, start in CONSTANTS:
            t = tensors[name]
            w = dequantize(t.data, t.tensor_type).astype(np.float32).reshape(-1)
            vals = ", ".join("%.9gf" % v for v in w[start:start + 8])
            print(f"{name} [{t.tensor_type.name}] elements {start}..{start + 7}: {vals}")
        if not os.path.exists(os.path.join(args.model_dir, "model.safetensors")):
            return 0

    ours = read_safetensors(os.path.join(args.model_dir, "model.safetensors"))
    names = list(tensors) if args.all else args.tensors.split(",")
    worst = 0.0
    for name in names:
        t = tensors[name]
        ref = dequantize(t.data, t.tensor_type).astype(np.float32)
        ref = ref.reshape([int(x) for x in reversed(t.shape)])
        mine = np.asarray(ours[hf_name(name)])
        kind = name.split(".")[2] if name.startswith("blk.") else ""
        if kind == "attn_q": mine = interleave_rows(mine, n_head)
        if kind == "attn_k": mine = interleave_rows(mine, n_kv)
        assert mine.shape == ref.shape, (name, mine.shape, ref.shape)
        d = float(np.max(np.abs(mine.astype(np.float64) - ref.astype(np.float64))))
        worst = max(worst, d)
        print(f"{name:28s} {t.tensor_type.name:5s} {str(list(ref.shape)):14s} max abs diff {d:.3g}")
    print(f"{len(names)} tensors, worst max abs diff {worst:.3g}")
    return 0 if worst <= args.tol else 1


if __name__ == "__main__":
    sys.exit(main())
