#!/usr/bin/env bash
# Fetches llama.cpp's tokenizer test vocabularies (ggml-vocab-*.gguf with their
# .inp/.out cases), which PyPI's llama-cpp-python source distribution carries,
# into a cache directory, and prints that directory. Only pip is used, as a
# download client: nothing is built or installed.
set -euo pipefail
VERSION=0.3.36
NAMES="llama-spm llama-bpe qwen2 gpt-2 phi-3 deepseek-llm"
CACHE="${MORI_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/mori}/vocab-$VERSION"
if [ ! -f "$CACHE/.complete" ]; then
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  python3 -m pip download --quiet --no-deps --no-binary llama-cpp-python \
    "llama-cpp-python==$VERSION" -d "$tmp" >&2
  mkdir -p "$CACHE"
  members=()
  for n in $NAMES; do
    for ext in gguf gguf.inp gguf.out; do
      members+=("llama_cpp_python-$VERSION/vendor/llama.cpp/models/ggml-vocab-$n.$ext")
    done
  done
  tar -xzf "$tmp/llama_cpp_python-$VERSION.tar.gz" -C "$tmp" "${members[@]}"
  mv "$tmp/llama_cpp_python-$VERSION/vendor/llama.cpp/models/"* "$CACHE/"
  touch "$CACHE/.complete"
fi
echo "$CACHE"
