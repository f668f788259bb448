#!/usr/bin/env python3
"""Records llama.cpp's expert routing on Mori's random mixture-of-experts models.

For every case in CASES this script
  1. writes the model with `mori dev random-model` (the same shape as the
     conformance fixture of that architecture; the file's sha256 is recorded),
  2. runs 64 fixed tokens through llama.cpp (PyPI `llama-cpp-python`) one token
     at a time, with an eval callback (`cb_eval` in the context parameters) that
     reads two tensors of `build_moe_ffn` in every MoE layer:
       ffn_moe_topk-N          the chosen experts, best first (i32 [k, n_tokens])
       ffn_moe_weights_norm-N  their weights after renormalisation (f32 [k, n_tokens])
  3. stores them as JSON under crates/mori-model/tests/fixtures/moe_routing/.

crates/mori-model/tests/moe_routing.rs regenerates each model, checks the
digest, and compares Mori's routing trace with these token by token.

Usage (from the repository root, with llama-cpp-python installed):
    cargo build --release -p mori
    python3 scripts/record_moe_routing.py [--mori target/release/mori]
"""

import argparse
import ctypes
import json
import os
import random
import re
import sys
import tempfile

import llama_cpp

sys.path.insert(0, os.path.dirname(__file__))
from record_conformance import ARCH_TYPES, N_POS, SPECS, sha256, write_model  # noqa: E402

FIXTURES = os.path.join("crates", "mori-model", "tests", "fixtures", "moe_routing")
CASES = [(arch, ty) for arch in ("qwen3moe", "ernie4_5-moe") for ty in ARCH_TYPES[arch]]

GGML_TYPE_F32 = 0
GGML_TYPE_I32 = 26


class GgmlTensor(ctypes.Structure):
    """`struct ggml_tensor` of ggml.h (GGML_MAX_DIMS 4, GGML_MAX_SRC 10,
    GGML_MAX_OP_PARAMS 64, GGML_MAX_NAME 64) as built into llama-cpp-python 0.3.36."""

    _fields_ = [
        ("type", ctypes.c_int),
        ("buffer", ctypes.c_void_p),
        ("ne", ctypes.c_int64 * 4),
        ("nb", ctypes.c_size_t * 4),
        ("op", ctypes.c_int),
        ("op_params", ctypes.c_int32 * 16),
        ("flags", ctypes.c_int32),
        ("src", ctypes.c_void_p * 10),
        ("view_src", ctypes.c_void_p),
        ("view_offs", ctypes.c_size_t),
        ("data", ctypes.c_void_p),
        ("name", ctypes.c_char * 64),
        ("extra", ctypes.c_void_p),
        ("padding", ctypes.c_char * 8),
    ]


# The selection scores (probabilities, plus ERNIE's bias) show how close each
# choice was: the margin between the last chosen and the first passed-over expert.
WANTED = re.compile(r"^(ffn_moe_topk|ffn_moe_weights_norm|ffn_moe_probs|ffn_moe_probs_biased)-(\d+)$")
_seen = []  # (name, rows) in the order llama.cpp computed them


def _read(t):
    """The [k, n_tokens] tensor as a list of rows (one per token)."""
    ctype = {GGML_TYPE_I32: ctypes.c_int32, GGML_TYPE_F32: ctypes.c_float}[t.type]
    k, n = t.ne[0], t.ne[1]
    assert t.nb[0] == ctypes.sizeof(ctype), (t.name, t.nb[0])
    rows = []
    for j in range(n):
        arr = (ctype * k).from_address(t.data + j * t.nb[1])
        rows.append(list(arr))
    return rows


@llama_cpp.ggml_backend_sched_eval_callback
def _callback(ptr, ask, _user):
    t = ctypes.cast(ptr, ctypes.POINTER(GgmlTensor)).contents
    name = t.name.decode()
    if ask:
        return WANTED.match(name) is not None
    if WANTED.match(name):
        _seen.append((name, _read(t)))
    return True


_default_ctx = llama_cpp.llama_context_default_params


def _ctx_params():
    p = _default_ctx()
    p.cb_eval = _callback
    return p


llama_cpp.llama.llama_cpp.llama_context_default_params = _ctx_params

_default_model = llama_cpp.llama_model_default_params


def _model_params():
    # The conformance reference: no weight repacking.
    p = _default_model()
    p.use_extra_bufts = False
    return p


llama_cpp.llama.llama_cpp.llama_model_default_params = _model_params


def record(path, tokens):
    llm = llama_cpp.Llama(model_path=path, n_ctx=128, n_batch=N_POS, n_ubatch=1, logits_all=True,
                          n_threads=2, verbose=False)
    _seen.clear()
    llm.eval(tokens)
    del llm
    # One [k, 1] tensor per layer per token (ubatch 1), in token order.
    layers = {}
    for name, rows in _seen:
        kind, il = name.rsplit("-", 1)
        entry = layers.setdefault(int(il), {})
        entry.setdefault(kind, []).extend(rows)
    out = []
    for il in sorted(layers):
        e = layers[il]
        experts, weights = e["ffn_moe_topk"], e["ffn_moe_weights_norm"]
        scores = e.get("ffn_moe_probs_biased", e["ffn_moe_probs"])
        assert len(experts) == len(tokens) == len(weights) == len(scores), (il, len(experts), len(weights))
        k = len(experts[0])
        margins = [sorted(s, reverse=True)[k - 1] - sorted(s, reverse=True)[k] for s in scores]
        out.append(dict(layer=il, experts=experts, weights=weights, min_selection_margin=min(margins)))
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mori", default=os.path.join("target", "release", "mori"))
    args = ap.parse_args()
    os.makedirs(FIXTURES, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        for arch, ty in CASES:
            spec = SPECS[arch]
            rng = random.Random(1000 + spec["seed"])  # the conformance tokens
            tokens = [1] + [rng.randrange(3, spec["vocab"]) for _ in range(N_POS - 1)]
            path = os.path.join(tmp, f"{arch}-{ty}.gguf")
            write_model(args.mori, arch, ty, spec, path)
            layers = record(path, tokens)
            fixture = dict(
                arch=arch, type=ty, spec=spec, sha256=sha256(path), tokens=tokens,
                reference=f"llama-cpp-python {llama_cpp.__version__}, one token at a time, no weight repacking; "
                "ffn_moe_topk-N and ffn_moe_weights_norm-N read with cb_eval",
                layers=layers,
            )
            name = f"{arch}-{ty}.json"
            with open(os.path.join(FIXTURES, name), "w") as f:
                json.dump(fixture, f)
                f.write("\n")
            margin = min(layer["min_selection_margin"] for layer in layers)
            print(f"{arch:12} {ty:7} {len(layers)} MoE layers x {len(tokens)} tokens, "
                  f"smallest selection margin {margin:.2e} -> {name}", file=sys.stderr)


if __name__ == "__main__":
    main()
