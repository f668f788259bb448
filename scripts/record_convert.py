#!/usr/bin/env python3
"""Records what the outside tools make of Mori's random Hugging Face checkpoints.

For every case in CASES this script
  1. writes a random-weight checkpoint with `mori dev random-hf` (config.json,
     model.safetensors, a byte-level BPE tokenizer.json; deterministic, and the
     sha256 of every file is recorded),
  2. converts it with llama.cpp's own `convert_hf_to_gguf.py` and records, per
     tensor, its GGUF type, shape and the sha256 of its bytes, and the
     architecture and tokenizer metadata the engine reads,
  3. runs 64 fixed tokens through llama.cpp (PyPI `llama-cpp-python`) on that
     GGUF, one token at a time without weight repacking, as
     record_conformance.py does,
  4. runs the same tokens through Hugging Face `transformers` on the checkpoint
     itself (float32, CPU torch), and records how its tokenizer encodes a few
     texts,
and stores both logits as little-endian f16 [n_pos][vocab] under
crates/mori-model/tests/fixtures/convert/ with one manifest.json.

CI then writes the same checkpoints with Mori, converts them with `mori
convert`, and compares tensors, metadata and logits without any Python
(crates/mori-model/tests/convert.rs).

The checkpoints' tokenizer is made up, so llama.cpp's converter cannot
recognise its pre-tokenizer by the hash of a test encoding; the script tells it
the name (the one the tokenizer's split expression belongs to) instead of
editing the converter.

Usage (from the repository root):
    cargo build --release -p mori
    TORCH_PY=/path/to/venv-with-torch+transformers/bin/python \\
    LLAMA_PY=/path/to/venv-with-llama-cpp-python/bin/python \\
    LLAMA_CPP=/path/to/llama.cpp \\
        python3 scripts/record_convert.py
"""

import argparse
import hashlib
import json
import os
import random
import subprocess
import sys
import tempfile

N_POS = 64
FIXTURES = os.path.join("crates", "mori-model", "tests", "fixtures", "convert")

SPECS = {
    "llama": dict(vocab=384, embd=256, layers=2, heads=4, kv_heads=2, head_dim=64, ff=512, ctx=2048,
                  rope_base=10000.0, tied=False, seed=11),
    "qwen2": dict(vocab=384, embd=256, layers=2, heads=4, kv_heads=1, head_dim=64, ff=768, ctx=4096,
                  rope_base=1000000.0, tied=True, seed=12),
    "qwen3": dict(vocab=384, embd=256, layers=2, heads=4, kv_heads=2, head_dim=128, ff=512, ctx=4096,
                  rope_base=1000000.0, tied=False, seed=13),
    # DeepSeek-R1-Distill-Qwen: Qwen2 with QKV bias and an untied output.
    "qwen2-untied": dict(arch="qwen2", vocab=384, embd=256, layers=2, heads=4, kv_heads=2, head_dim=64, ff=512,
                         ctx=4096, rope_base=10000.0, tied=False, seed=15),
    "qwen3moe": dict(vocab=384, embd=256, layers=2, heads=4, kv_heads=2, head_dim=64, ff=768, ctx=4096,
                     rope_base=1000000.0, tied=False, seed=14, experts=8, experts_used=2, expert_ff=256),
}
PRE = {"llama": "llama-bpe", "qwen2": "qwen2", "qwen3": "qwen2", "qwen3moe": "qwen2"}
# (architecture, checkpoint dtype, converter output type)
CASES = [
    ("llama", "F32", "f32"),
    ("llama", "BF16", "f16"),
    ("llama", "F32", "q8_0"),
    ("qwen2", "F16", "f16"),
    ("qwen2", "F32", "q8_0"),
    ("qwen3", "BF16", "bf16"),
    ("qwen3", "F32", "f32"),
    ("qwen2-untied", "BF16", "bf16"),
    ("qwen3moe", "F32", "f32"),
    ("qwen3moe", "BF16", "bf16"),
]

# Runs llama.cpp's converter with the pre-tokenizer name given (see above).
CONVERT = r"""
import runpy, sys
llama_cpp_dir, pre = sys.argv[1], sys.argv[2]
sys.argv = [llama_cpp_dir + "/convert_hf_to_gguf.py"] + sys.argv[3:]
sys.path.insert(0, llama_cpp_dir)
sys.path.insert(1, llama_cpp_dir + "/gguf-py")
import conversion.base as base
for cls in vars(base).values():
    if isinstance(cls, type) and "get_vocab_base_pre" in vars(cls):
        cls.get_vocab_base_pre = lambda self, tokenizer: pre
runpy.run_path(sys.argv[0], run_name="__main__")
"""

# Prints a JSON summary of a GGUF file: tensors and the metadata the engine reads.
SUMMARY = r"""
import hashlib, json, sys
sys.path.insert(0, sys.argv[1] + "/gguf-py")
from gguf import GGUFReader, GGUFValueType
r = GGUFReader(sys.argv[2])
arch = None
meta = {}
for f in r.fields.values():
    if f.name.startswith("GGUF.") or f.name.startswith("general."):
        if f.name == "general.architecture":
            arch = f.contents()
        continue
    v = f.contents()
    if isinstance(v, list) and len(v) > 16:
        v = {"len": len(v), "sha256": hashlib.sha256(json.dumps(v, ensure_ascii=False).encode()).hexdigest()}
    meta[f.name] = v
tensors = []
for t in r.tensors:
    tensors.append(dict(name=t.name, type=t.tensor_type.name, dims=[int(d) for d in t.shape],
                        sha256=hashlib.sha256(bytes(t.data.tobytes())).hexdigest()))
print(json.dumps(dict(arch=arch, metadata=meta, tensors=tensors)))
"""

LOGITS_LLAMA = r"""
import sys, numpy as np, llama_cpp
path, out, tokens = sys.argv[1], sys.argv[2], [int(t) for t in sys.argv[3].split(",")]
_default = llama_cpp.llama_model_default_params
def params():
    p = _default()
    p.use_extra_bufts = False
    return p
llama_cpp.llama.llama_cpp.llama_model_default_params = params
llm = llama_cpp.Llama(model_path=path, n_ctx=128, n_batch=len(tokens), n_ubatch=1, logits_all=True,
                      n_threads=2, verbose=False)
llm.eval(tokens)
np.array(llm.scores[: len(tokens)], dtype=np.float32).tofile(out)
print(llama_cpp.__version__)
"""

LOGITS_HF = r"""
import sys, numpy as np, torch, transformers
path, out, tokens = sys.argv[1], sys.argv[2], [int(t) for t in sys.argv[3].split(",")]
torch.manual_seed(0)
m = transformers.AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
m.eval()
with torch.no_grad():
    logits = m(torch.tensor([tokens])).logits[0].float().numpy()
logits.astype(np.float32).tofile(out)
print(f"transformers {transformers.__version__}, torch {torch.__version__}")
"""


TOKENIZE = r"""
import json, sys, transformers
tok = transformers.AutoTokenizer.from_pretrained(sys.argv[1])
texts = json.loads(sys.argv[2])
print(json.dumps([tok(t, add_special_tokens=True)["input_ids"] for t in texts]))
"""

# Texts whose encodings are recorded: plain words, spaces and newlines, digits,
# text outside the merges, and a special token written in the text.
TEXTS = [
    "the rain in spain stays mainly in the plain",
    "  leading spaces,\n\nnewlines\tand tabs  ",
    "Numbers 12345 and 3.14; CAPS and MiXeD",
    "héllo wörld — 東京 🚀",
    "<|im_start|>user\nhi there<|im_end|>",
    "",
]


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def run(cmd, **kw):
    return subprocess.run(cmd, check=True, capture_output=True, text=True, **kw).stdout


def write_checkpoint(mori, arch, dtype, spec, out):
    cmd = [mori, "dev", "random-hf", out, "--arch", arch, "--type", dtype]
    for k, v in spec.items():
        flag = "--" + k.replace("_", "-")
        if isinstance(v, bool):
            if v:
                cmd.append(flag)
        else:
            cmd += [flag, str(v)]
    run(cmd)


def logits(py, script, path, tokens, n_vocab, tmp):
    import numpy as np
    out = os.path.join(tmp, "logits.f32")
    version = run([py, "-c", script, path, out, ",".join(map(str, tokens))]).strip()
    x = np.fromfile(out, dtype="<f4").reshape(len(tokens), n_vocab)
    return x, version


def main():
    import numpy as np
    ap = argparse.ArgumentParser()
    ap.add_argument("--mori", default=os.path.join("target", "release", "mori"))
    args = ap.parse_args()
    torch_py = os.environ.get("TORCH_PY", "/root/venvs/torch/bin/python")
    llama_py = os.environ.get("LLAMA_PY", "/root/venvs/ref/bin/python")
    llama_cpp = os.environ.get("LLAMA_CPP", "/root/sdist/llama_cpp_python-0.3.36/vendor/llama.cpp")
    os.makedirs(FIXTURES, exist_ok=True)
    cases = []
    versions = {}
    with tempfile.TemporaryDirectory() as tmp:
        for spec_name, dtype, outtype in CASES:
            spec = dict(SPECS[spec_name])
            arch = spec.pop("arch", spec_name)
            name = f"{spec_name}-{dtype}-{outtype}"
            ckpt = os.path.join(tmp, name)
            write_checkpoint(args.mori, arch, dtype, spec, ckpt)
            files = {f: sha256(os.path.join(ckpt, f)) for f in sorted(os.listdir(ckpt))}
            gguf = os.path.join(tmp, name + ".gguf")
            run([torch_py, "-c", CONVERT, llama_cpp, PRE[arch], ckpt, "--outfile", gguf, "--outtype", outtype])
            summary = json.loads(run([torch_py, "-c", SUMMARY, llama_cpp, gguf]))
            rng = random.Random(2000 + spec["seed"])
            tokens = [rng.randrange(0, spec["vocab"] - 3) for _ in range(N_POS)]
            ref, versions["llama.cpp"] = logits(llama_py, LOGITS_LLAMA, gguf, tokens, spec["vocab"], tmp)
            hf, versions["transformers"] = logits(torch_py, LOGITS_HF, ckpt, tokens, spec["vocab"], tmp)
            encodings = json.loads(run([torch_py, "-c", TOKENIZE, ckpt, json.dumps(TEXTS)]))
            ref.astype("<f2").tofile(os.path.join(FIXTURES, name + ".llama.f16"))
            hf.astype("<f2").tofile(os.path.join(FIXTURES, name + ".hf.f16"))
            cases.append(dict(name=name, arch=arch, dtype=dtype, outtype=outtype, spec=spec, files=files, tokens=tokens,
                              llama_cpp_logits=name + ".llama.f16", hf_logits=name + ".hf.f16",
                              tokenize=[dict(text=t, ids=ids) for t, ids in zip(TEXTS, encodings)],
                              gguf=summary, logit_std=round(float(ref.std(axis=1).mean()), 3)))
            print(f"{name:20} {len(summary['tensors'])} tensors, logit std {ref.std(axis=1).mean():.2f}",
                  file=sys.stderr)
    manifest = dict(
        reference=f"llama.cpp convert_hf_to_gguf.py and llama-cpp-python {versions['llama.cpp']}; "
                  f"{versions['transformers']}",
        n_pos=N_POS,
        note="Per case: the checkpoint's file digests, llama.cpp's conversion (tensor types, dims in GGUF "
             "order, data sha256; metadata other than general.*, arrays longer than 16 as length and sha256 "
             "of their JSON), and logits of llama.cpp on its conversion (one token at a time, no repacking) "
             "and of transformers on the checkpoint (float32), f16 little-endian [n_pos][vocab].",
        cases=cases,
    )
    with open(os.path.join(FIXTURES, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1, ensure_ascii=False)
        f.write("\n")


if __name__ == "__main__":
    main()
