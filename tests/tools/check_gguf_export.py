#!/usr/bin/env python3
"""Independent check of `qstream export --format gguf` (standard library only), written from the
GGUF specification and the ggml block layouts, not from qstream's reader.

usage: check_gguf_export.py FILE.gguf [--tables RUN_DIR] [DUMP_DIR BLOCK...]

Parses the whole file: header (GGUF v3), every key/value, the tensor table; checks that the data
section starts at the alignment, that every tensor's offset is aligned, that tensors do not
overlap and that the last one ends inside the file. Prints `kv KEY VALUE` for the scalar and
string keys, `tensor NAME TYPE ne0xne1` for every tensor.

With DUMP_DIR (files blockB.<linear>.npy from `qstream dump`, float32 [out, in]): dequantizes
each listed block's seven linears from the GGUF (F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0),
undoes llama.cpp's Q/K row interleave, and compares every element with the dump. Tolerance: the
GGUF holds each block's scale d and offset m as half floats, so a weight may move by half an
ulp of each: 2^-11 (|d q| + |m|), plus 2^-24 for half-float subnormals (F32: exact; F16 / BF16:
half an ulp of the value), plus 2^-22 of the value for the float32 rounding of the dump and of the
scale the half float was made from.

With --tables RUN_DIR: every 61st row of token_embd.weight and of output.weight (when the file has
one) against the run's model.safetensors (model.embed_tokens.weight, and lm_head.weight or, tied,
the embedding again). F32 exact, F16 / BF16 within half an ulp; Q8_0 as ggml's reference rounds
it: each block's largest code is +-127 (or the block is all zero), and each value is within
d / 2 of the source, d = max |x| / 127, plus |q| times the half-float rounding of d.
With LLaMA-3 rope scaling in the run's config.json, rope_freqs.weight must hold the divisors of
the inverse frequencies that transformers' llama3 rule gives, within 1e-6 of each.
Exit 1 on any failure.
"""
import json
import math
import os
import struct
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from check_gptq_export import read_npy  # noqa: E402  the same .npy reader

LIN = [("self_attn.q_proj", "attn_q"), ("self_attn.k_proj", "attn_k"), ("self_attn.v_proj", "attn_v"),
       ("self_attn.o_proj", "attn_output"), ("mlp.gate_proj", "ffn_gate"), ("mlp.up_proj", "ffn_up"),
       ("mlp.down_proj", "ffn_down")]
TYPES = {0: ("F32", 1, 4), 1: ("F16", 1, 2), 2: ("Q4_0", 32, 18), 3: ("Q4_1", 32, 20), 6: ("Q5_0", 32, 22),
         7: ("Q5_1", 32, 24), 8: ("Q8_0", 32, 34), 30: ("BF16", 1, 2)}
SCALAR = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}


class Reader:
    def __init__(self, data):
        self.d, self.p = data, 0

    def take(self, fmt):
        v = struct.unpack_from(fmt, self.d, self.p)
        self.p += struct.calcsize(fmt)
        return v[0]

    def string(self):
        n = self.take("<Q")
        s = self.d[self.p:self.p + n].decode("utf-8")
        self.p += n
        return s

    def value(self, t):
        if t in SCALAR:
            return self.take(SCALAR[t])
        if t == 8:
            return self.string()
        if t == 9:
            et, n = self.take("<I"), self.take("<Q")
            return [self.value(et) for _ in range(n)]
        raise ValueError("unknown value type %d" % t)


def half(h):
    return struct.unpack("<e", struct.pack("<H", h))[0]


def bf16(b):
    return struct.unpack("<f", struct.pack("<I", b << 16))[0]


def dequant_row(tname, raw, n):
    """n values of one row and, for the block types, each value's tolerance"""
    vals, tols = [], []
    if tname == "F32":
        vals = list(struct.unpack_from("<%df" % n, raw))
        return vals, [0.0] * n
    if tname in ("F16", "BF16"):
        hs = struct.unpack_from("<%dH" % n, raw)
        vals = [half(h) if tname == "F16" else bf16(h) for h in hs]
        rel = 2.0 ** -11 if tname == "F16" else 2.0 ** -8
        return vals, [rel * abs(v) + 2.0 ** -24 for v in vals]
    bb = TYPES[[k for k, v in TYPES.items() if v[0] == tname][0]][2]
    for b in range(n // 32):
        blk = raw[b * bb:(b + 1) * bb]
        d = half(struct.unpack_from("<H", blk, 0)[0])
        m = half(struct.unpack_from("<H", blk, 2)[0]) if tname in ("Q4_1", "Q5_1") else 0.0
        if tname == "Q8_0":
            q = list(struct.unpack_from("<32b", blk, 2))
        else:
            qs = blk[{"Q4_0": 2, "Q4_1": 4, "Q5_0": 6, "Q5_1": 8}[tname]:]
            q = [qs[j] & 15 for j in range(16)] + [qs[j] >> 4 for j in range(16)]
            if tname in ("Q5_0", "Q5_1"):
                qh = struct.unpack_from("<I", blk, 2 if tname == "Q5_0" else 4)[0]
                q = [q[j] | ((qh >> j) & 1) << 4 for j in range(32)]
            q = [x - {"Q4_0": 8, "Q5_0": 16}.get(tname, 0) for x in q]
        for x in q:
            vals.append(d * x + m)
            tols.append(2.0 ** -11 * (abs(d * x) + abs(m)) + 2.0 ** -24)
    return vals, tols


ST_DT = {"F32": ("<f", 4), "F16": ("<e", 2), "BF16": (None, 2)}


def st_rows(path, name, rows):
    """the listed rows of a 2-D tensor of a safetensors file, as floats"""
    with open(path, "rb") as f:
        hl = struct.unpack("<Q", f.read(8))[0]
        hdr = json.loads(f.read(hl))
        e = hdr[name]
        fmt, sz = ST_DT[e["dtype"]]
        cols = e["shape"][1]
        out = []
        for r in rows:
            f.seek(8 + hl + e["data_offsets"][0] + r * cols * sz)
            raw = f.read(cols * sz)
            if fmt:
                out.append(list(struct.unpack("<%d%s" % (cols, fmt[1]), raw)))
            else:
                out.append([bf16(h) for h in struct.unpack("<%dH" % cols, raw)])
        return out


def check_table(data, start, tensors, gname, run, hf):
    t, ne, off = tensors[gname]
    tname, bs, bb = TYPES[t]
    cols, nrows = ne
    rows = list(range(0, nrows, 61))
    src = st_rows(os.path.join(run, "model.safetensors"), hf, rows)
    rowbytes = cols // bs * bb
    worst = 0.0
    for r, ref in zip(rows, src):
        p = start + off + r * rowbytes
        raw = data[p:p + rowbytes]
        if tname == "Q8_0":
            vals = []
            for b in range(cols // 32):
                blk = raw[b * 34:(b + 1) * 34]
                d16 = half(struct.unpack_from("<H", blk, 0)[0])
                q = struct.unpack_from("<32b", blk, 2)
                x = ref[b * 32:(b + 1) * 32]
                d = max(abs(v) for v in x) / 127.0
                if max(abs(v) for v in q) != (127 if d > 0 else 0):
                    print("FAIL: %s row %d block %d: largest code %d, not 127" % (gname, r, b, max(abs(v) for v in q)))
                    return 1
                for j in range(32):
                    tol = d / 2 * (1 + 2.0 ** -20) + abs(q[j]) * abs(d16 - d) + 2.0 ** -30
                    e = abs(d16 * q[j] - x[j])
                    if e > tol:
                        print("FAIL: %s [%d, %d]: Q8_0 %r, source %r (tolerance %g)" %
                              (gname, r, b * 32 + j, d16 * q[j], x[j], tol))
                        return 1
                    worst = max(worst, e / d if d else 0.0)
            continue
        vals, tols = dequant_row(tname, raw, cols)
        for c in range(cols):
            if abs(vals[c] - ref[c]) > tols[c]:
                print("FAIL: %s [%d, %d]: GGUF %r, source %r (tolerance %g)" % (gname, r, c, vals[c], ref[c], tols[c]))
                return 1
    print("table %s %s: %d rows match the source%s" % (gname, tname, len(rows),
          " (largest difference %.3f of d)" % worst if tname == "Q8_0" else ""))
    return 0


def llama3_divisors(cfg):
    """transformers' llama3 rope rule, as divisors of the unscaled inverse frequencies"""
    rs = cfg["rope_scaling"]
    hd = cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"]
    base = cfg.get("rope_theta", 10000.0)
    factor, low, high = rs["factor"], rs["low_freq_factor"], rs["high_freq_factor"]
    old = rs["original_max_position_embeddings"]
    low_wl, high_wl = old / low, old / high
    out = []
    for i in range(hd // 2):
        f = 1.0 / base ** (2 * i / hd)
        wl = 2 * math.pi / f
        if wl < high_wl:
            nf = f
        elif wl > low_wl:
            nf = f / factor
        else:
            sm = (old / wl - low) / (high - low)
            nf = (1 - sm) * f / factor + sm * f
        out.append(f / nf)
    return out


def main():
    args = sys.argv[1:]
    run = None
    if "--tables" in args:
        i = args.index("--tables")
        run = args[i + 1]
        del args[i:i + 2]
    sys.argv[1:] = args
    path = sys.argv[1]
    data = open(path, "rb").read()
    r = Reader(data)
    fail = 0
    assert data[:4] == b"GGUF", "not a GGUF file"
    r.p = 4
    version, nt, nkv = r.take("<I"), r.take("<Q"), r.take("<Q")
    if version != 3:
        print("FAIL: version %d" % version)
        fail = 1
    kv = {}
    for _ in range(nkv):
        k = r.string()
        kv[k] = r.value(r.take("<I"))
        if not isinstance(kv[k], list):
            print("kv %s %s" % (k, kv[k] if not isinstance(kv[k], str) or len(kv[k]) < 200 else kv[k][:200]))
        else:
            print("kv %s [%d]" % (k, len(kv[k])))
    align = kv.get("general.alignment", 32)
    tensors = {}
    for _ in range(nt):
        name = r.string()
        nd = r.take("<I")
        ne = [r.take("<Q") for _ in range(nd)]
        t, off = r.take("<I"), r.take("<Q")
        tensors[name] = (t, ne, off)
    start = (r.p + align - 1) // align * align
    end = start
    for name, (t, ne, off) in sorted(tensors.items(), key=lambda x: x[1][2]):
        tname, bs, bb = TYPES[t]
        n = 1
        for x in ne[1:]:
            n *= x
        size = ne[0] // bs * bb * n
        if off % align or start + off < end or ne[0] % bs:
            print("FAIL: tensor %s at %d (size %d) is misaligned or overlaps" % (name, off, size))
            fail = 1
        end = start + off + size
        print("tensor %s %s %s" % (name, tname, "x".join(str(x) for x in ne)))
    if end > len(data):
        print("FAIL: the last tensor ends at %d, the file at %d" % (end, len(data)))
        fail = 1
    if run:
        cfg = json.load(open(os.path.join(run, "config.json")))
        fail |= check_table(data, start, tensors, "token_embd.weight", run, "model.embed_tokens.weight")
        if "output.weight" in tensors:
            tied = cfg.get("tie_word_embeddings", False)
            fail |= check_table(data, start, tensors, "output.weight", run,
                                "model.embed_tokens.weight" if tied else "lm_head.weight")
        rs = cfg.get("rope_scaling") or {}
        if rs.get("rope_type", rs.get("type")) == "llama3":
            if "rope_freqs.weight" not in tensors:
                print("FAIL: LLaMA-3 rope scaling without rope_freqs.weight")
                return 1
            t, ne, off = tensors["rope_freqs.weight"]
            got = struct.unpack_from("<%df" % ne[0], data, start + off)
            want = llama3_divisors(cfg)
            bad = [i for i in range(len(want)) if len(got) != len(want) or abs(got[i] - want[i]) > 1e-6 * want[i]]
            if t != 0 or bad:
                print("FAIL: rope_freqs.weight %r, transformers' llama3 rule %r" % (list(got), want))
                return 1
            print("rope_freqs.weight: %d divisors match the llama3 rule (%g .. %g)" % (len(want), min(want), max(want)))
    if len(sys.argv) > 2:
        dump, blocks = sys.argv[2], [int(b) for b in sys.argv[3:]]
        hd = kv["llama.attention.key_length"]
        worst, ratio = 0.0, 0.0
        for b in blocks:
            for hf, gg in LIN:
                t, ne, off = tensors["blk.%d.%s.weight" % (b, gg)]
                tname, bs, bb = TYPES[t]
                cols, rows = ne
                rowbytes = cols // bs * bb
                shape, ref = read_npy("%s/block%d.%s.npy" % (dump, b, hf))
                if shape != (rows, cols):
                    print("FAIL: block %d %s: dump %s, GGUF [%d, %d]" % (b, hf, shape, rows, cols))
                    fail = 1
                    continue
                for g in range(rows):
                    o = g
                    if gg in ("attn_q", "attn_k"):  # GGUF row 2i of a head is HF row i, 2i+1 is i + hd/2
                        h, j = divmod(g, hd)
                        o = h * hd + (j // 2 + hd // 2 if j % 2 else j // 2)
                    p = start + off + g * rowbytes
                    vals, tols = dequant_row(tname, data[p:p + rowbytes], cols)
                    base = o * cols
                    for c in range(cols):
                        e = abs(vals[c] - ref[base + c])
                        tols[c] += 2.0 ** -22 * abs(ref[base + c])  # the dump's own float32 rounding
                        if e > tols[c]:
                            print("FAIL: block %d %s [%d, %d]: GGUF %r, dump %r (tolerance %g)" %
                                  (b, hf, o, c, vals[c], ref[base + c], tols[c]))
                            return 1
                        worst = max(worst, e)
                        ratio = max(ratio, e / tols[c] if tols[c] else 0.0)
        print("blocks %s: every weight within tolerance (largest difference %g, %.2f of its tolerance)" %
              (blocks, worst, ratio))
    return fail


if __name__ == "__main__":
    sys.exit(main())
