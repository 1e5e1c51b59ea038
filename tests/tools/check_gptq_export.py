#!/usr/bin/env python3
"""Independent check of a GPTQ (v1) export, written from the format's description, standard
library only: parses model.safetensors by hand, unpacks qweight / qzeros as one little-endian bit
stream per column (2/4/8 bits: 32/bits values per int32; 3 bits: 32 values per 3 int32 words,
straddling word boundaries), and rebuilds W[o, c] = scales[g, o] * (q[c, o] - (qzeros[g, o] + 1)),
g = g_idx[c]. Compares with the dequantized tensors qstream dump wrote (.npy float32), and checks
shapes, dtypes, config.json's quantization_config against quantize_config.json, and desc_act
against the g_idx tensors (true iff some g_idx[c] != c // group_size).

usage: check_gptq_export.py HF_DIR DUMP_DIR BLOCK [BLOCK ...]
DUMP_DIR holds block<N>.<lin>.npy for each block and linear."""
import json
import struct
import sys

LINS = ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
        "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"]


def read_safetensors(path):
    with open(path, "rb") as f:
        data = f.read()
    n = struct.unpack_from("<Q", data, 0)[0]
    header = json.loads(data[8:8 + n])
    base = 8 + n
    return header, data, base


def tensor(st, name, fmt):
    header, data, base = st
    t = header[name]
    a, b = t["data_offsets"]
    size = struct.calcsize("<" + fmt)
    count = (b - a) // size
    return t["shape"], t["dtype"], struct.unpack_from("<%d%s" % (count, fmt), data, base + a)


def unpack_stream(words, n, bits):
    """n values from a little-endian bit stream held in 32-bit words"""
    big = 0
    for i, w in enumerate(words):
        big |= (w & 0xFFFFFFFF) << (32 * i)
    mask = (1 << bits) - 1
    return [(big >> (bits * j)) & mask for j in range(n)]


def read_npy(path):
    with open(path, "rb") as f:
        data = f.read()
    assert data[:6] == b"\x93NUMPY", path
    hl = struct.unpack_from("<H", data, 8)[0]
    hdr = data[10:10 + hl].decode()
    assert "'<f4'" in hdr and "False" in hdr, hdr
    shape = tuple(int(x) for x in hdr.split("(")[1].split(")")[0].split(",") if x.strip())
    vals = struct.unpack_from("<%df" % (shape[0] * shape[1]), data, 10 + hl)
    return shape, vals


def main():
    hf, dump, blocks = sys.argv[1], sys.argv[2], [int(b) for b in sys.argv[3:]]
    cfg = json.load(open(hf + "/config.json"))
    qc = cfg["quantization_config"]
    qc2 = json.load(open(hf + "/quantize_config.json"))
    assert qc["quant_method"] == "gptq" and qc["checkpoint_format"] in ("gptq", "gptq_v2"), qc
    zoff = 1 if qc["checkpoint_format"] == "gptq" else 0  # v1 stores zero - 1
    fields = ("quant_method", "bits", "group_size", "desc_act", "sym", "damp_percent", "true_sequential",
              "checkpoint_format")
    assert all(qc[k] == qc2[k] for k in fields), (qc, qc2)
    assert qc["true_sequential"] is True and isinstance(qc["sym"], bool) and isinstance(qc["desc_act"], bool), qc
    assert qc["bits"] in (2, 3, 4, 8) and (qc["group_size"] > 0 or qc["group_size"] == -1), qc
    assert cfg["torch_dtype"] == "float16"
    bits = qc["bits"]
    st = read_safetensors(hf + "/model.safetensors")
    for name, t in st[0].items():  # everything that is not a packed linear is F16
        if name != "__metadata__" and not name.endswith((".qweight", ".qzeros", ".scales", ".g_idx")):
            assert t["dtype"] == "F16", (name, t["dtype"])
    unordered = 0  # linears whose g_idx is not c // group_size (act-order)
    for name in st[0]:
        if name.endswith(".g_idx"):
            shape, _, gi = tensor(st, name, "i")
            gsz = qc["group_size"] if qc["group_size"] > 0 else shape[0]
            unordered += any(gi[c] != c // gsz for c in range(shape[0]))
    assert (unordered > 0) == qc["desc_act"], "desc_act %s but %d linears with g_idx out of order" % (
        qc["desc_act"], unordered)
    worst = 0.0
    checked = 0
    for b in blocks:
        for lin in LINS:
            p = "model.layers.%d.%s." % (b, lin)
            qs, qd, qw = tensor(st, p + "qweight", "i")
            zs, zd, qz = tensor(st, p + "qzeros", "i")
            ss, sd, sc = tensor(st, p + "scales", "e")
            gs, gd, gi = tensor(st, p + "g_idx", "i")
            assert (qd, zd, sd, gd) == ("I32", "I32", "F16", "I32"), (qd, zd, sd, gd)
            (rows, cols), ref = read_npy("%s/block%d.%s.npy" % (dump, b, lin))
            groups = ss[0]
            assert qs == [cols * bits // 32, rows] and zs == [groups, rows * bits // 32] and ss == [groups, rows] \
                and gs == [cols], (qs, zs, ss, gs, rows, cols)
            expect_groups = -(-cols // qc["group_size"]) if qc["group_size"] > 0 else 1
            assert groups == expect_groups and all(0 <= g < groups for g in gi), (p, groups, expect_groups)
            words = qs[0]
            zeros = []
            for g in range(groups):
                zeros.append(unpack_stream(qz[g * zs[1]:(g + 1) * zs[1]], rows, bits))
            amax = max(abs(v) for v in ref) or 1.0
            for o in range(rows):
                col = unpack_stream([qw[k * rows + o] for k in range(words)], cols, bits)
                for c in range(cols):
                    g = gi[c]
                    s = sc[g * rows + o]
                    w = s * (col[c] - (zeros[g][o] + zoff))
                    r = ref[o * cols + c]
                    # the export rounds each scale to fp16: relative 2^-11 of |scale| * |q - z|
                    tol = abs(s) * abs(col[c] - (zeros[g][o] + zoff)) * 2.0 ** -10 + 1e-7 * amax
                    err = abs(w - r)
                    if err > tol:
                        sys.exit("%s: [%d, %d] = %g, dump says %g (tolerance %g)" % (p, o, c, w, r, tol))
                    worst = max(worst, err)
            checked += 1
    print("gptq export: %d linears of blocks %s match the dequantized shards (max abs diff %.3g, %d bits, "
          "group_size %d, desc_act %s, %d linears act-ordered)"
          % (checked, blocks, worst, bits, qc["group_size"], qc["desc_act"], unordered))


if __name__ == "__main__":
    main()
