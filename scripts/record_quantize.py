#!/usr/bin/env python3
"""Records llama.cpp's quantization of Mori's random-weight models.

For every case in CASES this script
  1. writes an F32 or F16 model with `mori dev random-model` (deterministic:
     the same flags give the same bytes; the file's sha256 is recorded),
  2. quantizes it with llama.cpp (`llama_cpp.llama_model_quantize`, PyPI
     `llama-cpp-python`) to each of Q8_0, Q4_0, Q4_K_M, Q5_K_M and Q6_K,
  3. records, per output tensor: name, ggml type, shape, the sha256 of its
     bytes and, for quantized tensors, the RMS of llama.cpp's dequantized
     values minus the source values (gguf-py's `gguf.quants.dequantize`),
     plus the sha256 of each whole output file,
into crates/mori-model/tests/fixtures/quantize/<case>.json.

CI rebuilds each model with Mori, checks its digest, quantizes it with Mori
and compares (crates/mori-model/tests/quantize.rs); no Python is needed there.

Usage (from the repository root):
    cargo build --release -p mori
    /root/venvs/ref/bin/python scripts/record_quantize.py [--mori target/release/mori]
        [--gguf-py /root/sdist/llama_cpp_python-0.3.36/vendor/llama.cpp/gguf-py]
"""

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile

import numpy as np

FIXTURES = os.path.join("crates", "mori-model", "tests", "fixtures", "quantize")
GGUF_PY = "/root/sdist/llama_cpp_python-0.3.36/vendor/llama.cpp/gguf-py"

# Small models (a few MB) with the shapes that exercise the type rules:
#  - llama: every row length a multiple of 256, eight layers (so the _M mixes'
#    "more bits" layers are 0, 3, 6 and 7), stored as F16, untied output;
#  - qwen2: hidden size 96 and feed-forward 200, so K types fall back to
#    Q5_0/Q5_1/Q8_0 and the ffn_down rows (200 wide) to F16; biases; tied output;
#  - qwen3: multiples of 256, tied output (the token embedding gets the output
#    rule), per-head q/k norms.
CASES = {
    "llama-f16-256": dict(arch="llama", type="F16", vocab=320, embd=256, layers=8, heads=4, kv_heads=1,
                          head_dim=64, ff=256, ctx=2048, rope_base=10000.0, tied=False, seed=11),
    "qwen2-f32-odd": dict(arch="qwen2", type="F32", vocab=300, embd=96, layers=3, heads=3, kv_heads=1,
                          head_dim=32, ff=200, ctx=2048, rope_base=1000000.0, tied=True, seed=12),
    "qwen3-f32-tied": dict(arch="qwen3", type="F32", vocab=300, embd=256, layers=2, heads=4, kv_heads=2,
                           head_dim=64, ff=256, ctx=2048, rope_base=1000000.0, tied=True, seed=13),
}
QUANT_TYPES = ["Q8_0", "Q4_0", "Q4_K_M", "Q5_K_M", "Q6_K"]


def write_model(mori, spec, path):
    cmd = [mori, "dev", "random-model", path]
    for k, v in spec.items():
        flag = "--" + k.replace("_", "-")
        if isinstance(v, bool):
            if v:
                cmd.append(flag)
        else:
            cmd += [flag, str(v)]
    subprocess.run(cmd, check=True)


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def as_f32(gguf, t):
    """A tensor's values as float32 rows: [rows][row length]."""
    n_cols = int(t.shape[0])
    return np.asarray(gguf.quants.dequantize(t.data, t.tensor_type), dtype=np.float32).reshape(-1, n_cols)


def compact_json(obj, depth=0):
    """JSON with one tensor record per line: readable diffs, small files."""
    if isinstance(obj, dict) and "sha256" in obj:
        return json.dumps(obj, separators=(",", ":"))
    pad, inner = " " * depth, " " * (depth + 1)
    if isinstance(obj, dict):
        items = [f"{inner}{json.dumps(k)}: {compact_json(v, depth + 1)}" for k, v in obj.items()]
        return "{\n" + ",\n".join(items) + "\n" + pad + "}"
    if isinstance(obj, list) and obj and isinstance(obj[0], dict):
        return "[\n" + ",\n".join(inner + compact_json(v, depth + 1) for v in obj) + "\n" + pad + "]"
    return json.dumps(obj)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mori", default=os.path.join("target", "release", "mori"))
    ap.add_argument("--gguf-py", default=GGUF_PY)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    sys.path.insert(0, args.gguf_py)
    import gguf
    import llama_cpp

    ftypes = {
        "Q8_0": llama_cpp.LLAMA_FTYPE_MOSTLY_Q8_0,
        "Q4_0": llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_0,
        "Q4_K_M": llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_K_M,
        "Q5_K_M": llama_cpp.LLAMA_FTYPE_MOSTLY_Q5_K_M,
        "Q6_K": llama_cpp.LLAMA_FTYPE_MOSTLY_Q6_K,
    }
    os.makedirs(FIXTURES, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        for case, spec in CASES.items():
            src_path = os.path.join(tmp, case + ".gguf")
            write_model(args.mori, spec, src_path)
            src = gguf.GGUFReader(src_path)
            source = {t.name: as_f32(gguf, t) for t in src.tensors}
            out = {
                "case": case,
                "spec": spec,
                "input_sha256": sha256_file(src_path),
                "input_bytes": os.path.getsize(src_path),
                "llama_cpp_python": llama_cpp.__version__,
                "types": {},
            }
            for qt in QUANT_TYPES:
                dst_path = os.path.join(tmp, f"{case}-{qt}.gguf")
                params = llama_cpp.llama_model_quantize_default_params()
                params.ftype = ftypes[qt]
                params.nthread = args.threads
                rc = llama_cpp.llama_model_quantize(src_path.encode(), dst_path.encode(), params)
                if rc != 0:
                    sys.exit(f"llama_model_quantize({case}, {qt}) returned {rc}")
                dst = gguf.GGUFReader(dst_path)
                tensors = []
                for t in dst.tensors:
                    rec = {
                        "name": t.name,
                        "type": t.tensor_type.name,
                        "shape": [int(d) for d in t.shape],
                        "sha256": hashlib.sha256(t.data.tobytes()).hexdigest(),
                    }
                    if t.tensor_type.name in ("Q4_K", "Q5_K", "Q6_K"):
                        diff = as_f32(gguf, t).astype(np.float64) - source[t.name].astype(np.float64)
                        rec["rms_err"] = float(np.sqrt(np.mean(diff * diff)))
                    tensors.append(rec)
                out["types"][qt] = {
                    "file_sha256": sha256_file(dst_path),
                    "file_bytes": os.path.getsize(dst_path),
                    "general.file_type": int(dst.fields["general.file_type"].contents()),
                    "tensors": tensors,
                }
                print(f"{case} {qt}: {len(tensors)} tensors, {os.path.getsize(dst_path)} bytes")
            with open(os.path.join(FIXTURES, case + ".json"), "w") as f:
                f.write(compact_json(out) + "\n")


if __name__ == "__main__":
    main()
