#!/usr/bin/env python3
"""Mori against llama.cpp on the same files, in the same run, on this machine.

For each shape x type it writes a random-weight model of a real architecture's
shape with `mori dev random-model` (speed does not depend on the weights' values),
then measures prompt processing (pp) and generation (tg) tokens/s:

  * Mori:      `mori bench MODEL -p P -n N -t T -r R --json`
  * llama.cpp: PyPI `llama-cpp-python` (built for this CPU) on the same file, the
               same way: P random tokens decoded in one batch; N tokens decoded one
               at a time from an empty context; median of R repetitions.

A memory-bandwidth probe (numpy reading 512 MiB per thread, in T threads) gives the physical limit for
generation: bandwidth / bytes of weights read per token (every matrix once, one row
of the token embedding). It prints a Markdown table (docs/PERFORMANCE.md holds one).

Usage (from the repository root):
    cargo build --release -p mori
    python3 bench/compare.py [--shapes llama-1b,qwen-0.5b] [--types Q4_0,Q8_0,Q4_K_M,F16]
                             [-p 512] [-n 128] [-t 2] [-r 3] [--dir /tmp/mori-bench]
Needs numpy and llama-cpp-python, e.g. CMAKE_ARGS="-DGGML_NATIVE=ON" pip install llama-cpp-python numpy
"""

import argparse
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import time

import numpy as np

SHAPES = {
    # Llama-3.2-1B: hidden 2048, 16 layers, 32 heads, 8 KV heads, FFN 8192, vocab 128256, tied output.
    "llama-1b": dict(arch="llama", vocab=128256, embd=2048, layers=16, heads=32, kv_heads=8, head_dim=64,
                     ff=8192, ctx=4096, rope_base=500000.0, tied=True),
    # Qwen2.5-0.5B: hidden 896, 24 layers, 14 heads, 2 KV heads, FFN 4864, vocab 151936, tied output.
    "qwen-0.5b": dict(arch="qwen2", vocab=151936, embd=896, layers=24, heads=14, kv_heads=2, head_dim=64,
                      ff=4864, ctx=4096, rope_base=1000000.0, tied=True),
}


def write_model(mori, shape, ty, path):
    if os.path.exists(path):
        return
    s = SHAPES[shape]
    cmd = [mori, "dev", "random-model", path, "--arch", s["arch"], "--type", ty]
    for k in ["vocab", "embd", "layers", "heads", "kv_heads", "head_dim", "ff", "ctx", "rope_base"]:
        cmd += ["--" + k.replace("_", "-"), str(s[k])]
    if s["tied"]:
        cmd.append("--tied")
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)


def bench_mori(mori, path, p, n, t, r):
    out = subprocess.run([mori, "bench", path, "-p", str(p), "-n", str(n), "-t", str(t), "-r", str(r), "--json"],
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out)


def bench_llama(path, p, n, t, r):
    import llama_cpp
    llm = llama_cpp.Llama(model_path=path, n_ctx=max(p, n) + 16, n_batch=max(p, 1), n_ubatch=max(p, 1),
                          n_threads=t, n_threads_batch=t, logits_all=False, verbose=False)
    rng = random.Random(1)
    vocab = llm.n_vocab()
    toks = [rng.randrange(vocab) for _ in range(max(p, n))]
    llm.eval(toks[:16])  # warm-up
    pp, tg = [], []
    for _ in range(r):
        if p:
            llm.reset()
            t0 = time.perf_counter()
            llm.eval(toks[:p])
            pp.append(p / (time.perf_counter() - t0))
        if n:
            llm.reset()
            t0 = time.perf_counter()
            for tok in toks[:n]:
                llm.eval([tok])
            tg.append(n / (time.perf_counter() - t0))
    del llm
    return (statistics.median(pp) if pp else 0.0), (statistics.median(tg) if tg else 0.0), llama_cpp.__version__


def bandwidth_gbs(threads):
    """Read bandwidth of `threads` threads each streaming its own 512 MiB array (best of 5).

    numpy releases the GIL in reductions, so the threads run in parallel."""
    from concurrent.futures import ThreadPoolExecutor
    arrays = [np.ones(1 << 27, dtype=np.float32) for _ in range(threads)]
    total = sum(a.nbytes for a in arrays)
    best = 0.0
    with ThreadPoolExecutor(threads) as pool:
        for _ in range(5):
            t0 = time.perf_counter()
            list(pool.map(lambda a: a.sum(), arrays))
            best = max(best, total / (time.perf_counter() - t0))
    return best / 1e9


def bytes_per_token(path):
    """File size minus the token embedding, plus one embedding row (what one token reads)."""
    sys.path.insert(0, os.environ.get("GGUF_PY", ""))
    size = os.path.getsize(path)
    try:
        import gguf
        r = gguf.GGUFReader(path)
        for t in r.tensors:
            if t.name == "token_embd.weight":
                emb = int(t.n_bytes)
                rows = int(t.shape[1]) if len(t.shape) > 1 else 1
                tied = not any(x.name == "output.weight" for x in r.tensors)
                # A tied embedding is also the output matrix, read whole every token.
                return size if tied else size - emb + emb // rows
    except ImportError:
        pass
    return size


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mori", default=os.path.join("target", "release", "mori"))
    ap.add_argument("--shapes", default="llama-1b,qwen-0.5b")
    ap.add_argument("--types", default="Q4_0,Q8_0,Q4_K_M,F16")
    ap.add_argument("-p", type=int, default=512)
    ap.add_argument("-n", type=int, default=128)
    ap.add_argument("-t", type=int, default=2)
    ap.add_argument("-r", type=int, default=3)
    ap.add_argument("--dir", default="/tmp/mori-bench")
    args = ap.parse_args()
    os.makedirs(args.dir, exist_ok=True)
    bw = bandwidth_gbs(args.t)
    rows = []
    for shape in args.shapes.split(","):
        for ty in args.types.split(","):
            path = os.path.join(args.dir, f"{shape}-{ty}.gguf")
            write_model(args.mori, shape, ty, path)
            m = bench_mori(args.mori, path, args.p, args.n, args.t, args.r)
            lpp, ltg, lver = bench_llama(path, args.p, args.n, args.t, args.r)
            limit = bw * 1e9 / bytes_per_token(path)
            row = dict(shape=shape, type=ty, size_gib=m["size_bytes"] / 2**30, mori_pp=m["pp_tps"], llama_pp=lpp,
                       mori_tg=m["tg_tps"], llama_tg=ltg, tg_limit=limit)
            rows.append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)
    cpu = "unknown"
    try:
        cpu = next(l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    print(f"Machine: {cpu}, {os.cpu_count()} logical CPUs, {platform.system()}; {args.t} threads; "
          f"llama-cpp-python {lver}; read bandwidth ({args.t} threads, numpy) {bw:.1f} GB/s; "
          f"pp{args.p} / tg{args.n}, median of {args.r}.\n")
    print("| shape | type | GiB | Mori pp | llama.cpp pp | pp ratio | Mori tg | llama.cpp tg | tg ratio | tg limit | Mori tg / limit |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    ratio = lambda a, b: f"{a / b:.2f}" if b else "-"
    for r in rows:
        print(f"| {r['shape']} | {r['type']} | {r['size_gib']:.2f} | {r['mori_pp']:.1f} | {r['llama_pp']:.1f} | "
              f"{ratio(r['mori_pp'], r['llama_pp'])} | {r['mori_tg']:.2f} | {r['llama_tg']:.2f} | "
              f"{ratio(r['mori_tg'], r['llama_tg'])} | {r['tg_limit']:.1f} | {r['mori_tg'] / r['tg_limit']:.0%} |")


if __name__ == "__main__":
    main()
