#!/usr/bin/env python3
"""Records llama.cpp's logits for Mori's random-weight conformance models.

For every architecture x tensor type in CASES this script
  1. writes the model with `mori dev random-model` (deterministic: the same
     flags give the same bytes, and the file's sha256 is recorded),
  2. runs 64 fixed tokens through llama.cpp (PyPI `llama-cpp-python`) with
     logits for every position,
  3. stores those logits as little-endian f16 under
     crates/mori-model/tests/fixtures/conformance/, plus one manifest.json.

CI then regenerates each model with Mori, checks the digest, and compares
Mori's logits with these without any Python (crates/mori-model/tests/conformance.rs).

It also records the sliding-window check (`gemma3-window.json`): llama.cpp's
logits at positions 600.. of a Gemma 3 model with a 512-token window, and for
comparison those of the same weights with a window longer than the text.

Usage (from the repository root, with llama-cpp-python installed):
    cargo build --release -p mori
    python3 scripts/record_conformance.py [--mori target/release/mori] [--arch ARCH ...]

With --arch, only those architectures are recorded again; the manifest keeps the
other cases as they are.
"""

import argparse
import hashlib
import json
import os
import random
import subprocess
import sys
import tempfile

import numpy as np
import llama_cpp

N_POS = 64
FIXTURES = os.path.join("crates", "mori-model", "tests", "fixtures", "conformance")

# Shapes per architecture: small, but with the features that tell the
# architectures apart (GQA, MQA, tied output, head width != hidden / heads).
SPECS = {
    "llama": dict(vocab=384, embd=256, layers=2, heads=4, kv_heads=2, head_dim=64, ff=512, ctx=2048,
                  rope_base=10000.0, tied=False, seed=1),
    "qwen2": dict(vocab=384, embd=256, layers=2, heads=4, kv_heads=1, head_dim=64, ff=768, ctx=4096,
                  rope_base=1000000.0, tied=True, seed=2),
    "qwen3": dict(vocab=384, embd=256, layers=2, heads=4, kv_heads=2, head_dim=128, ff=512, ctx=4096,
                  rope_base=1000000.0, tied=False, seed=3),
    # ERNIE 4.5 0.3B: tied output, query width (heads x 128) != hidden, adjacent-pair RoPE;
    # random q/k/v biases (its `use_bias` form).
    "ernie4_5": dict(vocab=384, embd=256, layers=2, heads=4, kv_heads=2, head_dim=128, ff=512, ctx=4096,
                     rope_base=500000.0, tied=True, seed=4),
    # openPangu-Embedded: rotate-half RoPE, random q/k/v and output-projection biases.
    "pangu-embedded": dict(vocab=384, embd=256, layers=2, heads=4, kv_heads=1, head_dim=64, ff=768, ctx=4096,
                           rope_base=16000000.0, tied=False, seed=5),
    # Mixtures of experts: 8 experts, 2 per token; ERNIE with one dense first
    # layer and a shared expert.
    "qwen3moe": dict(vocab=384, embd=256, layers=2, heads=4, kv_heads=2, head_dim=64, ff=768, ctx=4096,
                     rope_base=1000000.0, tied=False, seed=11, experts=8, experts_used=2, expert_ff=256),
    "ernie4_5-moe": dict(vocab=384, embd=256, layers=3, heads=4, kv_heads=2, head_dim=64, ff=512, ctx=4096,
                         rope_base=500000.0, tied=True, seed=12, experts=8, experts_used=2, expert_ff=256,
                         shared_experts=1, dense_lead=1),
    # Seven layers: windowed 0-4 and 6, full 5 (Gemma 3's five in six); a
    # 16-token window, so 64 positions really slide; heads wider than
    # embd / heads; local and global RoPE bases differ (10000 and 1e6). Not
    # tied: with the embedding scaled by sqrt(n_embd), a random tied model
    # predicts its input token with probability ~1, which hides differences.
    "gemma3": dict(vocab=384, embd=256, layers=7, heads=4, kv_heads=2, head_dim=128, ff=512, ctx=8192,
                   rope_base=1000000.0, tied=False, sliding_window=16, seed=4),
}
TYPES = ["F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q4_K", "Q5_K", "Q6_K", "Q4_K_M", "Q5_K_M"]
# Architectures checked on fewer types than TYPES: the float types, Q8_0, Q4_0 and the
# Q4_K_M mix cover every kernel path; the rest is the same code as for llama.
ARCH_TYPES = {
    "ernie4_5": ["F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_K_M"],
    "pangu-embedded": ["F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_K_M"],
    "qwen3moe": ["F32", "F16", "Q8_0", "Q4_0", "Q4_K_M"],
    "ernie4_5-moe": ["F32", "F16", "Q8_0", "Q4_0", "Q4_K_M"],
    "gemma3": ["F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_K_M"],
}

# The sliding-window check: logits at positions WINDOW_FROM..WINDOW_TO of a
# WINDOW_POS-token text, far enough past the 512-token window that it slides.
WINDOW_SPEC = dict(vocab=384, embd=256, layers=6, heads=4, kv_heads=1, head_dim=64, ff=512, ctx=8192,
                   rope_base=1000000.0, tied=False, sliding_window=512, seed=5)
WINDOW_TYPE = "F16"
WINDOW_POS, WINDOW_FROM, WINDOW_TO = 640, 600, 632
# The same weights with a window longer than the text: nothing slides.
UNLIMITED_WINDOW = 4096


def write_model(mori, arch, ty, spec, path):
    cmd = [mori, "dev", "random-model", path, "--arch", arch, "--type", ty]
    for k, v in spec.items():
        flag = "--" + k.replace("_", "-")
        if isinstance(v, bool):
            if v:
                cmd.append(flag)
        else:
            cmd += [flag, str(v)]
    subprocess.run(cmd, check=True)


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _params(repack):
    p = _default_params()
    p.use_extra_bufts = repack
    return p


_default_params = llama_cpp.llama_model_default_params
_repack = [True]
llama_cpp.llama.llama_cpp.llama_model_default_params = lambda: _params(_repack[0])


def run_llama(path, tokens, ubatch, repack, n_ctx=128):
    _repack[0] = repack
    llm = llama_cpp.Llama(model_path=path, n_ctx=n_ctx, n_batch=N_POS, n_ubatch=ubatch, logits_all=True,
                          n_threads=2, verbose=False)
    llm.eval(tokens)
    scores = np.array(llm.scores[: len(tokens)], dtype=np.float32)
    del llm
    return scores


def reference_logits(path, tokens):
    """llama.cpp's logits computed one token at a time, without weight repacking.

    llama.cpp has several kernels for the same product: a one-row dot product,
    batched kernels for prompts (ubatch > 1), and repacked weight layouts. They
    add partial products in different orders, and on these models that order
    alone moves llama.cpp's own logits by a mean KL of up to ~3e-4 -- more than
    the bounds being checked (see `llama_cpp_self_kl` per case in the manifest:
    llama.cpp's default settings against this reference). The one-token path
    is the one whose order Mori follows exactly, so comparing against it
    measures correctness rather than rounding luck.
    """
    return run_llama(path, tokens, ubatch=1, repack=False)


def mean_kl(p, q):
    def log_softmax(x):
        m = x.max(axis=1, keepdims=True)
        return x - m - np.log(np.exp(x - m).sum(axis=1, keepdims=True))
    lp, lq = log_softmax(p.astype(np.float64)), log_softmax(q.astype(np.float64))
    return float((np.exp(lp) * (lp - lq)).sum(axis=1).mean())


def record_window(mori, tmp):
    """llama.cpp's logits deep into a text longer than Gemma 3's window."""
    spec = WINDOW_SPEC
    rng = random.Random(1000 + spec["seed"])
    tokens = [1] + [rng.randrange(3, spec["vocab"]) for _ in range(WINDOW_POS - 1)]
    runs = {}
    for window in (spec["sliding_window"], UNLIMITED_WINDOW):
        path = os.path.join(tmp, f"gemma3-window-{window}.gguf")
        write_model(mori, "gemma3", WINDOW_TYPE, dict(spec, sliding_window=window), path)
        logits = run_llama(path, tokens, ubatch=1, repack=False, n_ctx=1024)
        assert logits.shape == (WINDOW_POS, spec["vocab"]), logits.shape
        runs[window] = (sha256(path), logits[WINDOW_FROM:WINDOW_TO])
    digest, logits = runs[spec["sliding_window"]]
    name = "gemma3-window.f16"
    logits.astype("<f2").tofile(os.path.join(FIXTURES, name))
    kl_unlimited = mean_kl(logits, runs[UNLIMITED_WINDOW][1])
    print(f"gemma3 window {spec['sliding_window']} vs {UNLIMITED_WINDOW}: llama.cpp's own mean KL "
          f"{kl_unlimited:.3e} at positions {WINDOW_FROM}..{WINDOW_TO}", file=sys.stderr)
    manifest = dict(
        reference=f"llama-cpp-python {llama_cpp.__version__}, one token at a time, no weight repacking, n_ctx 1024",
        note="llama.cpp's logits at positions [from, to) of tokens for a Gemma 3 model with a "
        "sliding window of spec.sliding_window, f16 little-endian [to - from][vocab]. "
        "unlimited_window_kl: llama.cpp's mean KL between these and its logits for the same "
        "weights with a window of unlimited_window (nothing slides).",
        arch="gemma3", type=WINDOW_TYPE, spec=spec, sha256=digest, tokens=tokens,
        logits=name, positions_from=WINDOW_FROM, positions_to=WINDOW_TO,
        unlimited_window=UNLIMITED_WINDOW, unlimited_window_sha256=runs[UNLIMITED_WINDOW][0],
        unlimited_window_kl=float(f"{kl_unlimited:.3e}"),
    )
    with open(os.path.join(FIXTURES, "gemma3-window.json"), "w") as f:
        json.dump(manifest, f, indent=1)
        f.write("\n")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mori", default=os.path.join("target", "release", "mori"))
    ap.add_argument("--arch", action="append", choices=sorted(SPECS),
                    help="record only these architectures and keep the manifest's other cases (repeatable)")
    args = ap.parse_args()
    os.makedirs(FIXTURES, exist_ok=True)
    manifest_path = os.path.join(FIXTURES, "manifest.json")
    cases = []
    if args.arch:
        with open(manifest_path) as f:
            cases = [c for c in json.load(f)["cases"] if c["arch"] not in args.arch]
    with tempfile.TemporaryDirectory() as tmp:
        if not args.arch or "gemma3" in args.arch:
            record_window(args.mori, tmp)
        for arch, spec in SPECS.items():
            if args.arch and arch not in args.arch:
                continue
            rng = random.Random(1000 + spec["seed"])
            tokens = [1] + [rng.randrange(3, spec["vocab"]) for _ in range(N_POS - 1)]
            for ty in ARCH_TYPES.get(arch, TYPES):
                path = os.path.join(tmp, f"{arch}-{ty}.gguf")
                write_model(args.mori, arch, ty, spec, path)
                logits = reference_logits(path, tokens)
                default = run_llama(path, tokens, ubatch=N_POS, repack=True)
                self_kl = mean_kl(logits, default)
                self_top1 = float((logits.argmax(axis=1) == default.argmax(axis=1)).mean())
                assert logits.shape == (N_POS, spec["vocab"]), logits.shape
                std = float(logits.std(axis=1).mean())
                name = f"{arch}-{ty}.f16"
                logits.astype("<f2").tofile(os.path.join(FIXTURES, name))
                cases.append(dict(arch=arch, type=ty, spec=spec, sha256=sha256(path), tokens=tokens,
                                  logits=name, logit_std=round(std, 3), llama_cpp_self_kl=float(f"{self_kl:.3e}"),
                                  llama_cpp_self_top1=round(self_top1, 4)))
                print(f"{arch:14} {ty:7} logit std {std:.2f}  llama.cpp self KL {self_kl:.2e} top-1 {self_top1:.3f}", file=sys.stderr)
    manifest = dict(
        reference=f"llama-cpp-python {llama_cpp.__version__}, one token at a time, no weight repacking",
        n_pos=N_POS,
        note="Logits of llama.cpp (f16 KV cache, ubatch 1, no weight repacking) for each random model, "
        "f16 little-endian [n_pos][vocab]. llama_cpp_self_kl: mean KL between this reference and "
        "llama.cpp's default settings (ubatch 64, repacking on) on the same file; llama_cpp_self_top1: "
        "their top-1 agreement.",
        cases=cases,
    )
    with open(manifest_path, "w") as f:
        json.dump(manifest, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
