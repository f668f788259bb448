#!/usr/bin/env python3
"""Records what the outside tools make of Mori's random Hugging Face checkpoints.

For every case in CASES this script
  1. writes a random-weight checkpoint with `mori dev random-hf` (config.json,
     model.safetensors, a byte-level BPE tokenizer.json, or for ernie4_5,
     ernie4_5-moe and pangu-embedded a SentencePiece tokenizer.model, for
     gemma3 both a tokenizer.model and Gemma's tokenizer.json, for mistral both
     a tokenizer.model and the tokenizer.json transformers converts it to
     (checked here against transformers' own conversion); deterministic, and
     the sha256 of every file is recorded),
  2. converts it with llama.cpp's own `convert_hf_to_gguf.py` and records, per
     tensor, its GGUF type, shape and the sha256 of its bytes, and the
     architecture and tokenizer metadata the engine reads,
  3. runs 64 fixed tokens through llama.cpp (PyPI `llama-cpp-python`) on that
     GGUF, one token at a time without weight repacking, as
     record_conformance.py does,
  4. runs the same tokens through Hugging Face `transformers` on the checkpoint
     itself (float32, CPU torch), and records how its tokenizer encodes a few
     texts; openPangu-Embedded is remote code only: its logits come from
     transformers' LlamaForCausalLM with attention_bias (what its remote class
     is), and its token ids from llama.cpp's tokenizer on llama.cpp's
     conversion (the case says `tokenize_by: llama.cpp`),
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
        python3 scripts/record_convert.py [--mori target/release/mori] [--only gemma3,ernie4_5-moe]

LLAMA_PY's llama-cpp-python must be built for AVX2 without AVX-512, the order
of operations Mori follows (an AVX-512 build sums and rounds F16/BF16 products
otherwise), e.g.
    CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON \
                -DGGML_BMI2=ON -DGGML_AVX512=OFF -DGGML_AVX_VNNI=OFF -DGGML_AMX_INT8=OFF" \
        pip install llama-cpp-python==0.3.36 numpy

--only records just the named cases (or every case of the named specs) and
keeps the manifest's other cases as they are, so their fixtures stay
byte-identical; it refuses to mix tool versions.
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
                         ctx=4096, rope_base=10000.0, tied=False, seed=17),
    "qwen3moe": dict(vocab=384, embd=256, layers=2, heads=4, kv_heads=2, head_dim=64, ff=768, ctx=4096,
                     rope_base=1000000.0, tied=False, seed=16, experts=8, experts_used=2, expert_ff=256),
    # SentencePiece tokenizer.model checkpoints; ERNIE's head_dim is not hidden/heads, as in the real 0.3B.
    "ernie4_5": dict(vocab=512, embd=256, layers=2, heads=4, kv_heads=2, head_dim=128, ff=512, ctx=2048,
                     rope_base=500000.0, tied=True, seed=14),
    "pangu-embedded": dict(vocab=512, embd=256, layers=2, heads=4, kv_heads=2, head_dim=64, ff=512, ctx=4096,
                           rope_base=16000000.0, tied=False, seed=15),
    # Gemma 3 text (gemma3_text): six layers, so llama.cpp's fixed pattern (five windowed layers, then a
    # global one) has both kinds; a 16-token window, so 64 positions really slide (transformers' own logits
    # with a 4096-token window differ by KL 0.03); heads wider than embd / heads; local and global RoPE
    # bases differ. Not tied: with the embedding scaled by sqrt(n_embd), a random tied model predicts its
    # input token with probability ~1, which hides differences; gemma3-tied (the real models' layout)
    # checks the tied conversion.
    "gemma3": dict(vocab=512, embd=256, layers=6, heads=4, kv_heads=1, head_dim=128, ff=512, ctx=8192,
                   rope_base=1000000.0, tied=False, sliding_window=16, seed=18),
    "gemma3-tied": dict(arch="gemma3", vocab=512, embd=256, layers=6, heads=4, kv_heads=1, head_dim=128, ff=512,
                        ctx=8192, rope_base=1000000.0, tied=True, sliding_window=16, seed=20),
    # ERNIE-4.5-MoE: a dense first layer, then two routing layers of 8 experts (2 per token) with one shared
    # expert and the expert-selection bias. intermediate_size / num_key_value_heads is the shared expert's
    # width, as llama.cpp's converter assumes (true of the real 21B-A3B). Seed 21, not 19: on seed 19's F16
    # checkpoint llama.cpp's F16-rounded activations send one of the 64 tokens to another second expert than
    # transformers' F32 activations do (a margin of 7e-4 in the selection scores), so the two references
    # themselves differ by KL 4.8e-4 and no implementation can be within 1e-4 of both (Mori is at 6e-7 of
    # llama.cpp there); of seeds 19, 21-24, 19 and 22 have such a token.
    "ernie4_5-moe": dict(vocab=512, embd=256, layers=3, heads=4, kv_heads=2, head_dim=128, ff=512, ctx=2048,
                         rope_base=500000.0, tied=True, seed=21, experts=8, experts_used=2, expert_ff=256,
                         shared_experts=1, dense_lead=1),
    # Mistral 7B as v0.3 ships it (MistralForCausalLM, sliding_window null, four query heads per key/value head,
    # RoPE base 1e6): Llama's tensors, a SentencePiece tokenizer.model with [INST]/[/INST] control pieces and the
    # same vocabulary as a tokenizer.json. llama.cpp's converter reads tokenizer.model first; transformers
    # encodes with tokenizer.json.
    "mistral": dict(vocab=512, embd=256, layers=2, heads=4, kv_heads=1, head_dim=64, ff=768, ctx=32768,
                    rope_base=1000000.0, tied=False, seed=22),
}
PRE = {"llama": "llama-bpe", "qwen2": "qwen2", "qwen3": "qwen2", "qwen3moe": "qwen2", "ernie4_5": "default",
       "pangu-embedded": "default", "gemma3": "default", "ernie4_5-moe": "default", "mistral": "default"}
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
    ("ernie4_5", "F32", "f32"),
    ("ernie4_5", "BF16", "bf16"),
    ("ernie4_5", "F32", "q8_0"),
    ("pangu-embedded", "F32", "f32"),
    ("pangu-embedded", "F16", "f16"),
    ("gemma3", "F32", "f32"),
    ("gemma3", "BF16", "bf16"),
    ("gemma3", "F32", "q8_0"),
    ("gemma3-tied", "F16", "f16"),
    # No BF16 checkpoint: llama.cpp rounds a BF16 matrix's activations to BF16, which on this model moves its
    # logits by KL 3.3e-4 from its own F32 run on the same weights (transformers keeps F32 activations and
    # agrees with that F32 run to 1.8e-6), so Mori, which rounds as llama.cpp does, cannot be within 1e-4 of
    # both references on it. F16 rounds finely enough (the references differ by 4.3e-6).
    ("ernie4_5-moe", "F32", "f32"),
    ("ernie4_5-moe", "F16", "f16"),
    ("ernie4_5-moe", "F32", "q8_0"),
    ("mistral", "F32", "f32"),
    ("mistral", "BF16", "bf16"),
    ("mistral", "F32", "q8_0"),
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
import json, sys, numpy as np, torch, transformers
path, out, tokens = sys.argv[1], sys.argv[2], [int(t) for t in sys.argv[3].split(",")]
torch.manual_seed(0)
if json.load(open(path + "/config.json"))["model_type"] == "PanguEmbedded":
    # openPangu-Embedded is remote code only; its PanguEmbeddedForCausalLM is
    # LlamaForCausalLM with biased q/k/v/o projections (config `bias`), which
    # transformers' Llama builds with attention_bias.
    c = json.load(open(path + "/config.json"))
    for k in ("architectures", "model_type", "bias", "torch_dtype"):
        c.pop(k, None)
    cfg = transformers.LlamaConfig(**c, attention_bias=True, mlp_bias=False)
    m = transformers.LlamaForCausalLM.from_pretrained(path, config=cfg, dtype=torch.float32)
else:
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

# llama.cpp's tokenizer on a GGUF, for checkpoints whose tokenizer transformers cannot load
# (openPangu's is remote code).
TOKENIZE_LLAMA = r"""
import json, sys, llama_cpp
llm = llama_cpp.Llama(model_path=sys.argv[1], vocab_only=True, verbose=False)
texts = json.loads(sys.argv[2])
print(json.dumps([llm.tokenize(t.encode(), add_bos=True, special=True) for t in texts]))
"""
# Architectures whose token ids come from llama.cpp rather than transformers.
TOKENIZE_WITH_LLAMA_CPP = {"pangu-embedded"}

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
# More texts for the SentencePiece checkpoints: their special tokens written in the text.
EXTRA_TEXTS = {
    "ernie4_5": ["<|begin_of_sentence|>User: hi there\nAssistant: hello<|end_of_sentence|>",
                 "the <mask:1> and <|IMAGE_PLACEHOLDER|> stay"],
    "pangu-embedded": ["[unused9]用户：hi there[unused10][unused9]助手：", "the [unused10]  end"],
    "gemma3": ["<start_of_turn>user\nhi there<end_of_turn>\n<start_of_turn>model\n",
               "the <mask> and <unused1>  stay", "<bos>hello world"],
}
EXTRA_TEXTS["mistral"] = ["<s>[INST] hi there[/INST] hello world</s>[INST]the rain[/INST]",
                          "[INST]  leading spaces [/INST]  ", "the [INST]and[/INST] end"]
EXTRA_TEXTS["ernie4_5-moe"] = EXTRA_TEXTS["ernie4_5"]

# Checkpoints whose tokenizer.json must be what transformers itself converts their tokenizer.model to: prints the
# top-level keys where the two differ.
SAME_AS_CONVERTED = r"""
import json, os, shutil, sys, tempfile, transformers
ckpt = sys.argv[1]
with tempfile.TemporaryDirectory() as tmp:
    src, out = os.path.join(tmp, "src"), os.path.join(tmp, "out")
    shutil.copytree(ckpt, src, ignore=shutil.ignore_patterns("tokenizer.json", "*.safetensors"))
    transformers.AutoTokenizer.from_pretrained(src).save_pretrained(out)
    with open(os.path.join(out, "tokenizer.json")) as f:
        theirs = json.load(f)
with open(os.path.join(ckpt, "tokenizer.json")) as f:
    ours = json.load(f)
print(json.dumps(sorted(k for k in set(ours) | set(theirs) if ours.get(k) != theirs.get(k))))
"""
TOKENIZER_JSON_FROM_SPM = {"mistral"}


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
    ap.add_argument("--only", default="",
                    help="comma-separated case names (e.g. gemma3-F32-f32) or spec names (e.g. gemma3) to record; "
                         "the manifest keeps every other case as it is")
    args = ap.parse_args()
    only = {x for x in args.only.split(",") if x}
    torch_py = os.environ.get("TORCH_PY", "/root/venvs/torch/bin/python")
    llama_py = os.environ.get("LLAMA_PY", "/root/venvs/ref/bin/python")
    llama_cpp = os.environ.get("LLAMA_CPP", "/root/sdist/llama_cpp_python-0.3.36/vendor/llama.cpp")
    os.makedirs(FIXTURES, exist_ok=True)
    manifest_path = os.path.join(FIXTURES, "manifest.json")
    old = {}
    old_reference = None
    if only and os.path.exists(manifest_path):
        with open(manifest_path) as f:
            previous = json.load(f)
        old = {c["name"]: c for c in previous["cases"]}
        old_reference = previous["reference"]
    cases = []
    versions = {}
    with tempfile.TemporaryDirectory() as tmp:
        for spec_name, dtype, outtype in CASES:
            spec = dict(SPECS[spec_name])
            arch = spec.pop("arch", spec_name)
            name = f"{spec_name}-{dtype}-{outtype}"
            if only and name not in only and spec_name not in only:
                if name in old:
                    cases.append(old[name])
                continue
            ckpt = os.path.join(tmp, name)
            write_checkpoint(args.mori, arch, dtype, spec, ckpt)
            files = {f: sha256(os.path.join(ckpt, f)) for f in sorted(os.listdir(ckpt))}
            if arch in TOKENIZER_JSON_FROM_SPM:
                differ = json.loads(run([torch_py, "-c", SAME_AS_CONVERTED, ckpt]))
                if differ:
                    sys.exit(f"{name}: tokenizer.json differs from transformers' conversion of tokenizer.model "
                             f"in {differ}")
            gguf = os.path.join(tmp, name + ".gguf")
            run([torch_py, "-c", CONVERT, llama_cpp, PRE[arch], ckpt, "--outfile", gguf, "--outtype", outtype])
            summary = json.loads(run([torch_py, "-c", SUMMARY, llama_cpp, gguf]))
            rng = random.Random(2000 + spec["seed"])
            tokens = [rng.randrange(0, spec["vocab"] - 3) for _ in range(N_POS)]
            ref, versions["llama.cpp"] = logits(llama_py, LOGITS_LLAMA, gguf, tokens, spec["vocab"], tmp)
            hf, versions["transformers"] = logits(torch_py, LOGITS_HF, ckpt, tokens, spec["vocab"], tmp)
            texts = TEXTS + EXTRA_TEXTS.get(arch, [])
            if arch in TOKENIZE_WITH_LLAMA_CPP:
                encodings = json.loads(run([llama_py, "-c", TOKENIZE_LLAMA, gguf, json.dumps(texts)]))
            else:
                encodings = json.loads(run([torch_py, "-c", TOKENIZE, ckpt, json.dumps(texts)]))
            ref.astype("<f2").tofile(os.path.join(FIXTURES, name + ".llama.f16"))
            hf.astype("<f2").tofile(os.path.join(FIXTURES, name + ".hf.f16"))
            case = dict(name=name, arch=arch, dtype=dtype, outtype=outtype, spec=spec, files=files, tokens=tokens,
                        llama_cpp_logits=name + ".llama.f16", hf_logits=name + ".hf.f16",
                        tokenize=[dict(text=t, ids=ids) for t, ids in zip(texts, encodings)],
                        gguf=summary, logit_std=round(float(ref.std(axis=1).mean()), 3))
            if arch in TOKENIZE_WITH_LLAMA_CPP:
                case["tokenize_by"] = "llama.cpp"
            cases.append(case)
            print(f"{name:20} {len(summary['tensors'])} tensors, logit std {ref.std(axis=1).mean():.2f}",
                  file=sys.stderr)
    reference = (f"llama.cpp convert_hf_to_gguf.py and llama-cpp-python {versions['llama.cpp']}; "
                 f"{versions['transformers']}") if versions else old_reference
    if old_reference is not None and reference != old_reference:
        sys.exit(f"the tools' versions changed ({reference!r}, the manifest says {old_reference!r}): "
                 "re-record every case")
    manifest = dict(
        reference=reference,
        n_pos=N_POS,
        note="Per case: the checkpoint's file digests, llama.cpp's conversion (tensor types, dims in GGUF "
             "order, data sha256; metadata other than general.*, arrays longer than 16 as length and sha256 "
             "of their JSON), and logits of llama.cpp on its conversion (one token at a time, no repacking) "
             "and of transformers on the checkpoint (float32), f16 little-endian [n_pos][vocab].",
        cases=cases,
    )
    with open(manifest_path, "w") as f:
        json.dump(manifest, f, indent=1, ensure_ascii=False)
        f.write("\n")


if __name__ == "__main__":
    main()
