#!/usr/bin/env bash
# Fuzzes the GGUF reader with cargo-fuzz (libFuzzer) for SECONDS (default 600),
# seeded with a small model written by Mori itself.
#   cargo install cargo-fuzz   # once
#   bash scripts/fuzz.sh 600
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_TO_RUN="${1:-600}"
cargo build --release -p mori
mkdir -p fuzz/corpus/gguf_reader
./target/release/mori dev random-model fuzz/corpus/gguf_reader/seed-llama.gguf --type Q4_0 \
  --vocab 300 --embd 32 --layers 1 --heads 2 --kv-heads 1 --head-dim 16 --ff 64
./target/release/mori dev random-model fuzz/corpus/gguf_reader/seed-qwen2.gguf --arch qwen2 --type Q8_0 \
  --vocab 280 --embd 32 --layers 1 --heads 2 --kv-heads 1 --head-dim 16 --ff 64
cd fuzz
# cargo-fuzz needs nightly flags; RUSTC_BOOTSTRAP lets the stable toolchain accept them.
RUSTC_BOOTSTRAP=1 cargo fuzz run gguf_reader -- -max_total_time="$SECONDS_TO_RUN" -max_len=200000 -rss_limit_mb=2048
