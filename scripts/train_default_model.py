#!/usr/bin/env python3
"""Train Mori's embedded default model: a tiny Llama on the Debian `fortunes` corpus.

The corpus is the fortune cookie collection in Debian's `fortunes` package
(fortune-mod data, BSD licence: /usr/share/doc/fortunes/copyright). We take the
thematic files listed in FILES (leaving out the ones about drugs, ethnicity, politics
and the like), split them into single fortunes, hold out every 50th for evaluation and
train on the rest.

What it writes (a Hugging Face Llama checkpoint, so Mori's own converter turns it into
the GGUF that ships in assets/default-model/):
    OUT/config.json, OUT/model.safetensors, OUT/tokenizer.json, OUT/tokenizer_config.json
    assets/default-model/heldout.txt    the held-out fortunes, as the perplexity test reads them
    assets/default-model/training.json  the settings and the trainer's own perplexity figures

Perplexity is defined the same way here and in `mori perplexity`: tokenize the
held-out text (the `<|endoftext|>` separators are the special token), cut the ids into
consecutive windows of CTX tokens (the last one may be shorter), and average the
negative log-likelihood of every token of a window but its first, given the tokens
before it in that window. The figure for Q8_0 weights is computed after rounding every
matrix the way Mori's Q8_0 quantizer does, since that is the file that ships.

Usage (CPU only, a few tens of minutes on 2 cores):
    sudo apt-get install fortunes
    python3 -m venv /root/venvs/train
    /root/venvs/train/bin/pip install jax optax numpy tokenizers safetensors
    /root/venvs/train/bin/python scripts/train_default_model.py --out /tmp/mori-fortunes --steps 906
    cargo run --release -p mori -- convert /tmp/mori-fortunes assets/default-model/mori-fortunes.gguf --type q8_0

(The shipped model was trained with --minutes 28, which came to 906 steps on the
machine it ran on; --steps 906 repeats that schedule. The output directory's name
becomes the model's general.name.)
"""

import argparse
import json
import math
import pathlib
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from safetensors.numpy import save_file
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

ROOT = pathlib.Path(__file__).resolve().parent.parent
ASSETS = ROOT / "assets/default-model"
CORPUS_DIR = pathlib.Path("/usr/share/games/fortunes")
FILES = [
    "fortunes", "wisdom", "literature", "science", "people", "education", "food", "humorists",
    "kids", "love", "magic", "miscellaneous", "pets", "platitudes", "riddles", "songs-poems",
    "sports", "work", "computers", "cookie", "definitions", "goedel", "linux", "paradoxum", "tao",
]
EOT = "<|endoftext|>"
HELD_OUT_EVERY = 50

# Model shape (Llama: RMSNorm, RoPE, grouped-query attention, SwiGLU, tied output).
CFG = dict(
    vocab_size=2048, hidden_size=192, intermediate_size=512, num_hidden_layers=4,
    num_attention_heads=6, num_key_value_heads=2, max_position_embeddings=512,
    rms_norm_eps=1e-5, rope_theta=10000.0,
)
CTX = 128


def load_fortunes():
    docs = []
    for name in FILES:
        text = (CORPUS_DIR / name).read_text(encoding="utf-8", errors="replace")
        for part in text.split("\n%\n"):
            part = part.strip("\n%")
            if part.strip():
                docs.append(part.expandtabs(8) + "\n")
    return docs


def train_tokenizer(train_docs):
    tok = Tokenizer(models.BPE())
    # GPT-2's byte-level pre-tokenizer and regex: GGUF calls this `gpt2` with pre `gpt-2`.
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=CFG["vocab_size"], special_tokens=[EOT],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    tok.train_from_iterator(train_docs, trainer=trainer)
    assert tok.get_vocab_size() == CFG["vocab_size"], tok.get_vocab_size()
    return tok


def encode_stream(tok, docs):
    eot = tok.token_to_id(EOT)
    ids = []
    for enc in tok.encode_batch(docs, add_special_tokens=False):
        ids.append(eot)
        ids.extend(enc.ids)
    return np.array(ids, dtype=np.int32)


def init_params(key):
    h, f, v = CFG["hidden_size"], CFG["intermediate_size"], CFG["vocab_size"]
    hd = h // CFG["num_attention_heads"]
    kv = CFG["num_key_value_heads"] * hd
    keys = iter(jax.random.split(key, 64))

    def lin(out_dim, in_dim, scale=1.0):
        return jax.random.normal(next(keys), (out_dim, in_dim), jnp.float32) * (scale / math.sqrt(in_dim))

    depth = 1.0 / math.sqrt(2 * CFG["num_hidden_layers"])
    p = {"embed": jax.random.normal(next(keys), (v, h), jnp.float32) * 0.02, "norm": jnp.ones(h), "layers": []}
    for _ in range(CFG["num_hidden_layers"]):
        p["layers"].append({
            "q": lin(h, h), "k": lin(kv, h), "v": lin(kv, h), "o": lin(h, h, depth),
            "gate": lin(f, h), "up": lin(f, h), "down": lin(h, f, depth),
            "attn_norm": jnp.ones(h), "ffn_norm": jnp.ones(h),
        })
    return p


def rms_norm(x, w):
    return x * jax.lax.rsqrt(jnp.mean(x * x, axis=-1, keepdims=True) + CFG["rms_norm_eps"]) * w


def rope(x, pos):
    # Hugging Face's layout: dimension i pairs with i + d/2 ("rotate half").
    d = x.shape[-1]
    inv = 1.0 / (CFG["rope_theta"] ** (jnp.arange(0, d, 2, dtype=jnp.float32) / d))
    ang = pos[:, None].astype(jnp.float32) * inv[None, :]
    cos = jnp.concatenate([jnp.cos(ang)] * 2, -1)[None, :, None, :]
    sin = jnp.concatenate([jnp.sin(ang)] * 2, -1)[None, :, None, :]
    x1, x2 = x[..., : d // 2], x[..., d // 2:]
    return x * cos + jnp.concatenate([-x2, x1], -1) * sin


def forward(p, ids):
    b, t = ids.shape
    nh, nkv = CFG["num_attention_heads"], CFG["num_key_value_heads"]
    hd = CFG["hidden_size"] // nh
    pos = jnp.arange(t)
    mask = jnp.tril(jnp.ones((t, t), bool))
    x = p["embed"][ids]
    for L in p["layers"]:
        y = rms_norm(x, L["attn_norm"])
        q = (y @ L["q"].T).reshape(b, t, nh, hd)
        k = (y @ L["k"].T).reshape(b, t, nkv, hd)
        v = (y @ L["v"].T).reshape(b, t, nkv, hd)
        q, k = rope(q, pos), rope(k, pos)
        k = jnp.repeat(k, nh // nkv, axis=2)
        v = jnp.repeat(v, nh // nkv, axis=2)
        s = jnp.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(hd)
        s = jnp.where(mask[None, None], s, -1e30)
        a = jnp.einsum("bhqk,bkhd->bqhd", jax.nn.softmax(s, -1), v).reshape(b, t, nh * hd)
        x = x + a @ L["o"].T
        y = rms_norm(x, L["ffn_norm"])
        x = x + (jax.nn.silu(y @ L["gate"].T) * (y @ L["up"].T)) @ L["down"].T
    return rms_norm(x, p["norm"]) @ p["embed"].T


def loss_fn(p, batch):
    logits = forward(p, batch[:, :-1])
    logp = jax.nn.log_softmax(logits, -1)
    nll = -jnp.take_along_axis(logp, batch[:, 1:, None], -1)[..., 0]
    return nll.mean()


def eval_nll(p, ids):
    """Sum of NLL and count over consecutive CTX windows, scoring all but each window's first token."""
    f = jax.jit(lambda p, w: -jnp.take_along_axis(jax.nn.log_softmax(forward(p, w[None, :-1]), -1)[0], w[1:, None], -1).sum())
    total, n = 0.0, 0
    for s in range(0, len(ids), CTX):
        w = ids[s:s + CTX]
        if len(w) < 2:
            continue
        total += float(f(p, jnp.asarray(w)))
        n += len(w) - 1
    return total, n


def q8_0_round(w):
    """Mori's Q8_0 for weights: blocks of 32 along a row, scale amax/127 stored as f16, rounded half away from zero with 1/d as in Mori's quants.rs."""
    w = np.asarray(w, np.float32)
    blocks = w.reshape(-1, 32)
    amax = np.abs(blocks).max(axis=1, keepdims=True)
    d32 = (amax / np.float32(127.0)).astype(np.float32)
    with np.errstate(divide="ignore"):
        inv = np.where(d32 != 0, np.float32(1.0) / d32, np.float32(0.0)).astype(np.float32)
    x = (blocks * inv).astype(np.float32)
    q = np.clip(np.trunc(x + np.copysign(np.float32(0.5), x)), -127, 127)
    d = d32.astype(np.float16).astype(np.float32)
    return (q * d).reshape(w.shape)


def as_stored(p, kind):
    """The weights as the GGUF holds them: norms in F32, matrices in F16 or Q8_0."""
    def mat(w):
        if kind == "q8_0":
            return jnp.asarray(q8_0_round(w))
        return jnp.asarray(np.asarray(w, np.float32).astype(np.float16).astype(np.float32))
    out = {"embed": mat(p["embed"]), "norm": p["norm"], "layers": []}
    for L in p["layers"]:
        out["layers"].append({k: (v if k.endswith("norm") else mat(v)) for k, v in L.items()})
    return out


def save_hf(p, tok, out):
    out.mkdir(parents=True, exist_ok=True)
    t = {"model.embed_tokens.weight": p["embed"], "model.norm.weight": p["norm"]}
    names = {"q": "self_attn.q_proj", "k": "self_attn.k_proj", "v": "self_attn.v_proj", "o": "self_attn.o_proj",
             "gate": "mlp.gate_proj", "up": "mlp.up_proj", "down": "mlp.down_proj",
             "attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm"}
    for i, L in enumerate(p["layers"]):
        for k, v in L.items():
            t[f"model.layers.{i}.{names[k]}.weight"] = v
    save_file({k: np.ascontiguousarray(np.asarray(v, np.float32)) for k, v in t.items()}, str(out / "model.safetensors"))
    eot = tok.token_to_id(EOT)
    config = {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_act": "silu",
        "tie_word_embeddings": True, "bos_token_id": eot, "eos_token_id": eot, "torch_dtype": "float32",
        "head_dim": CFG["hidden_size"] // CFG["num_attention_heads"], **CFG,
    }
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    tok.save(str(out / "tokenizer.json"))
    (out / "tokenizer_config.json").write_text(json.dumps({
        "bos_token": EOT, "eos_token": EOT, "add_bos_token": True, "model_max_length": CFG["max_position_embeddings"],
        "tokenizer_class": "PreTrainedTokenizerFast",
    }, indent=2) + "\n")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=pathlib.Path, default=pathlib.Path("/tmp/mori-fortunes"))
    ap.add_argument("--minutes", type=float, default=30.0, help="training time budget (sets the step count)")
    ap.add_argument("--steps", type=int, help="train exactly this many steps (training.json records the count used)")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--seed", type=int, default=1234)
    args = ap.parse_args()

    docs = load_fortunes()
    held = docs[::HELD_OUT_EVERY]
    train = [d for i, d in enumerate(docs) if i % HELD_OUT_EVERY]
    tok = train_tokenizer(train)
    train_ids = encode_stream(tok, train)
    held_text = "".join(EOT + d for d in held)
    held_ids = np.array(tok.encode(held_text, add_special_tokens=False).ids, np.int32)
    assert (held_ids == encode_stream(tok, held)).all(), "held-out text must tokenize as its documents do"
    print(f"{len(docs)} fortunes: {len(train)} train ({len(train_ids)} tokens), {len(held)} held out ({len(held_ids)} tokens)")

    key = jax.random.PRNGKey(args.seed)
    params = init_params(key)
    n_params = sum(x.size for x in jax.tree_util.tree_leaves(params))
    # Measure a step first, then size the schedule to the time budget.
    opt_probe = optax.adamw(args.lr)
    rng = np.random.default_rng(args.seed)

    def batch():
        starts = rng.integers(0, len(train_ids) - CTX - 1, args.batch)
        return jnp.asarray(np.stack([train_ids[s:s + CTX + 1] for s in starts]))

    def make_step(opt):
        @jax.jit
        def step(p, s, b):
            loss, g = jax.value_and_grad(loss_fn)(p, b)
            u, s = opt.update(g, s, p)
            return optax.apply_updates(p, u), s, loss
        return step

    probe = make_step(opt_probe)
    s0 = opt_probe.init(params)
    probe(params, s0, batch())  # compile
    t = time.time()
    for _ in range(3):
        _, _, l = probe(params, s0, batch())
    l.block_until_ready()
    per_step = (time.time() - t) / 3
    steps = args.steps or max(100, int(args.minutes * 60 / per_step))
    print(f"{n_params} parameters; {per_step:.2f} s/step -> {steps} steps of {args.batch}x{CTX} tokens")

    sched = optax.warmup_cosine_decay_schedule(0.0, args.lr, min(200, steps // 10), steps, args.lr * 0.05)
    opt = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(sched, b2=0.99, weight_decay=0.1))
    step = make_step(opt)
    state = opt.init(params)
    t0 = time.time()
    for i in range(steps):
        params, state, loss = step(params, state, batch())
        if i % 100 == 0 or i == steps - 1:
            print(f"step {i:5d}  loss {float(loss):.3f}  {time.time() - t0:.0f}s", flush=True)
    train_time = time.time() - t0

    figures = {}
    for kind in ["f32", "f16", "q8_0"]:
        p = params if kind == "f32" else as_stored(params, kind)
        total, n = eval_nll(p, held_ids)
        figures[kind] = {"perplexity": math.exp(total / n), "n_scored": n}
        print(f"held-out perplexity ({kind} weights): {figures[kind]['perplexity']:.4f} over {n} tokens")

    save_hf(params, tok, args.out)
    ASSETS.mkdir(parents=True, exist_ok=True)
    (ASSETS / "heldout.txt").write_text(held_text, encoding="utf-8")
    (ASSETS / "training.json").write_text(json.dumps({
        "corpus": "Debian package `fortunes` (fortune-mod data), BSD licence",
        "files": FILES, "held_out_every": HELD_OUT_EVERY,
        "n_train_tokens": int(len(train_ids)), "n_heldout_tokens": int(len(held_ids)),
        "config": CFG, "n_params": int(n_params), "steps": steps, "batch": args.batch, "ctx": CTX,
        "lr": args.lr, "seed": args.seed, "train_seconds": round(train_time),
        "jax": jax.__version__, "perplexity_ctx": CTX, "perplexity": figures,
    }, indent=2) + "\n")
    print(f"wrote {args.out} and {ASSETS}")


if __name__ == "__main__":
    main()
