#!/usr/bin/env python3
"""Independent check of qstream's import and forward pass (outside CI; needs pip packages
torch, transformers, safetensors, tokenizers, gguf, numpy).

1. Rebuilds the Hugging Face weights from the GGUF with the gguf package's own dequantizer and
   the inverse of llama.cpp's Q/K row permutation, and compares them with qstream's
   model.safetensors (max abs difference per tensor).
2. Tokenizes the text with the `tokenizers` package from the imported tokenizer.json and
   compares the ids with `qstream tokenize`.
3. Computes perplexity with transformers' LlamaForCausalLM in float32 on the CPU, with the
   protocol of qstream eval (non-overlapping windows, tail dropped, labels = inputs), and
   compares with `qstream eval --json`.

usage: check_ppl_transformers.py --gguf FILE --model-dir DIR --text FILE --seqlen 2048
                                 [--max-windows K] [--qstream build/qstream] [--qstream-json FILE]
"""
import argparse, json, math, subprocess, sys, time

import numpy as np


def unpermute(w, n_head):
    # llama.cpp stores Q/K rows so that rotate-half pairs are adjacent; undo it
    out_dim = w.shape[0]
    return w.reshape(n_head, out_dim // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def weights_from_gguf(path):
    from gguf import GGUFReader
    from gguf.quants import dequantize
    r = GGUFReader(path)
    f = r.fields
    def scalar(k):
        return f[k].parts[f[k].data[0]][0]
    n_head, n_kv = int(scalar("llama.attention.head_count")), int(scalar("llama.attention.head_count_kv"))
    names = {"attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
             "attn_output": "self_attn.o_proj", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
             "ffn_down": "mlp.down_proj", "attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm"}
    sd = {}
    for t in r.tensors:
        w = dequantize(t.data, t.tensor_type).astype(np.float32)
        shape = [int(x) for x in reversed(t.shape)]
        w = w.reshape(shape)
        if t.name == "token_embd.weight": hf = "model.embed_tokens.weight"
        elif t.name == "output_norm.weight": hf = "model.norm.weight"
        elif t.name == "output.weight": hf = "lm_head.weight"
        else:
            _, layer, kind, suffix = t.name.split(".")
            hf = f"model.layers.{layer}.{names[kind]}.{suffix}"
            if kind == "attn_q": w = unpermute(w, n_head)
            if kind == "attn_k": w = unpermute(w, n_kv)
        sd[hf] = w
    return sd


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--gguf", required=True)
    ap.add_argument("--model-dir", required=True)
    ap.add_argument("--text", required=True)
    ap.add_argument("--seqlen", type=int, default=2048)
    ap.add_argument("--max-windows", type=int, default=0)
    ap.add_argument("--qstream", default="build/qstream")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--qstream-json", help="reuse the output of an earlier `qstream eval --json` run")
    a = ap.parse_args()

    import torch
    from safetensors.numpy import load_file
    from tokenizers import Tokenizer
    from transformers import LlamaConfig, LlamaForCausalLM
    if a.threads: torch.set_num_threads(a.threads)

    ref = weights_from_gguf(a.gguf)
    ours = load_file(f"{a.model_dir}/model.safetensors")
    worst = 0.0
    for k, w in ref.items():
        if k not in ours: sys.exit(f"missing in qstream's import: {k}")
        if ours[k].shape != w.shape: sys.exit(f"{k}: shape {ours[k].shape} vs {w.shape}")
        worst = max(worst, float(np.abs(ours[k] - w).max()))
    print(f"weights: {len(ref)} tensors, max abs difference vs gguf-py dequantization {worst:.3g}")

    text = open(a.text, "rb").read().decode("utf-8")  # no newline translation (the file has CRLF)
    ids = Tokenizer.from_file(f"{a.model_dir}/tokenizer.json").encode(text).ids
    q = subprocess.run([a.qstream, "tokenize", a.model_dir, "--text", a.text], check=True,
                       capture_output=True, text=True).stdout.split()
    same = [int(x) for x in q] == ids
    print(f"tokens: {len(ids)} from tokenizers; qstream tokenize {'identical' if same else 'DIFFERENT'}")

    cfg = LlamaConfig.from_pretrained(a.model_dir)
    model = LlamaForCausalLM(cfg)
    sd = {k: torch.from_numpy(v) for k, v in ours.items()}
    if cfg.tie_word_embeddings: sd["lm_head.weight"] = sd["model.embed_tokens.weight"]
    model.load_state_dict(sd, strict=True)
    model.eval()
    nwin = len(ids) // a.seqlen
    if a.max_windows: nwin = min(nwin, a.max_windows)
    t0, nll = time.time(), 0.0
    with torch.no_grad():
        for w in range(nwin):
            x = torch.tensor(ids[w * a.seqlen:(w + 1) * a.seqlen]).unsqueeze(0)
            nll += float(model(x, labels=x).loss) * (a.seqlen - 1)
    ref_ppl = math.exp(nll / (nwin * (a.seqlen - 1)))
    t_ref = time.time() - t0
    print(f"transformers: ppl {ref_ppl:.5f} over {nwin} windows of {a.seqlen} ({t_ref:.0f} s)", flush=True)
    cmd = [a.qstream, "eval", a.model_dir, "--text", a.text, "--seqlen", str(a.seqlen), "--json"]
    if a.max_windows: cmd += ["--max-windows", str(a.max_windows)]
    if a.qstream_json:
        res = json.load(open(a.qstream_json))
        assert res["seqlen"] == a.seqlen and res["windows"] == nwin, "the saved qstream run has other settings"
    else:
        res = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
    rel = abs(res["ppl"] - ref_ppl) / ref_ppl
    print(f"seqlen {a.seqlen}, windows {nwin}: transformers ppl {ref_ppl:.5f} ({t_ref:.0f} s), "
          f"qstream ppl {res['ppl']:.5f} ({res['seconds']:.0f} s, {res['tokens_per_second']:.0f} tok/s), "
          f"relative difference {rel:.2e}")
    sys.exit(0 if rel < 1e-3 and same else 1)


if __name__ == "__main__":
    main()
