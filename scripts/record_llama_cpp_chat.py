#!/usr/bin/env python3
"""Records what llama.cpp's own chat formats (llama-chat.cpp) produce for the
architectures whose built-in template Mori picks when a GGUF carries none.

For each format below this calls `llama_chat_apply_template` through
llama-cpp-python's low-level API, once by the format's name and once with the
model's Hugging Face template text (which llama.cpp recognises by a marker
string), and stores the texts in
crates/mori-engine/tests/fixtures/chat_templates/llama_cpp_builtin.json.
`cargo test -p mori-engine --test chat_templates` renders the same
conversations with Mori's built-in templates and compares byte for byte.

llama.cpp has no ERNIE 4.5 format: the script records what it does with
ERNIE's template text (it recognises none, or another model's format) so the
fixture states it, and Mori's `ernie4_5` built-in is checked against
transformers' renders of that text instead (record_chat_templates.py).

Usage (from the repository root, with llama-cpp-python installed):
    /root/venvs/ref/bin/python scripts/record_llama_cpp_chat.py
"""

import ctypes
import json
import pathlib

import llama_cpp

ROOT = pathlib.Path(__file__).resolve().parent.parent
DIR = ROOT / "crates/mori-engine/tests/fixtures/chat_templates"

# Mori's built-in name -> (llama.cpp's format name or None, the model's HF template file).
FORMATS = {
    "pangu-embedded": ("pangu-embedded", "openpangu-embedded.jinja"),
    "ernie4_5": (None, "ernie4.5.jinja"),
}

CASES = [
    {"name": "single_user", "messages": [{"role": "user", "content": "Hello!"}], "add_generation_prompt": True},
    {
        "name": "system_multi_turn",
        "messages": [
            {"role": "system", "content": "You are a terse assistant."},
            {"role": "user", "content": "What is 2+2?"},
            {"role": "assistant", "content": "4."},
            {"role": "user", "content": "And 3+3?"},
        ],
        "add_generation_prompt": True,
    },
    {
        "name": "no_generation_prompt",
        "messages": [
            {"role": "user", "content": "Name a colour."},
            {"role": "assistant", "content": "Blue."},
        ],
        "add_generation_prompt": False,
    },
    {
        "name": "unicode",
        "messages": [
            {"role": "system", "content": "你是一个乐于助人的助手。"},
            {"role": "user", "content": "东京の天気は？ 🌸 \"quoted\"\n  second line\t tab "},
        ],
        "add_generation_prompt": True,
    },
    {
        "name": "tool_result",
        "messages": [
            {"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "content": "Checking."},
            {"role": "tool", "content": "{\"temp\": 21.5}"},
        ],
        "add_generation_prompt": True,
    },
    {
        "name": "empty_system",
        "messages": [{"role": "system", "content": ""}, {"role": "user", "content": "Hi"}],
        "add_generation_prompt": True,
    },
]


def apply(tmpl, messages, add_ass):
    arr = (llama_cpp.llama_chat_message * len(messages))()
    keep = []
    for i, m in enumerate(messages):
        role, content = m["role"].encode(), m["content"].encode()
        keep += [role, content]
        arr[i].role = role
        arr[i].content = content
    size = 1 << 16
    buf = ctypes.create_string_buffer(size)
    n = llama_cpp.llama_chat_apply_template(tmpl, arr, len(messages), add_ass, buf, size)
    if n < 0:
        return None
    assert n < size, n
    return buf.raw[:n].decode("utf-8")


def main():
    out = {
        "reference": f"llama-cpp-python {llama_cpp.__version__} llama_chat_apply_template",
        "formats": [],
    }
    for mori_name, (ll_name, hf_file) in FORMATS.items():
        hf_source = (DIR / hf_file).read_text(encoding="utf-8").encode()
        entry = {"builtin": mori_name, "llama_cpp_format": ll_name, "hf_template": hf_file, "cases": []}
        for case in CASES:
            by_text = apply(hf_source, case["messages"], case["add_generation_prompt"])
            rec = dict(case)
            if ll_name is not None:
                by_name = apply(ll_name.encode(), case["messages"], case["add_generation_prompt"])
                assert by_name is not None, (mori_name, case["name"])
                # The HF template text must lead llama.cpp to the same format.
                assert by_text == by_name, (mori_name, case["name"], by_text, by_name)
                rec["text"] = by_name
            else:
                # Informational: what llama.cpp's detection makes of the text.
                rec["llama_cpp_from_hf_text"] = by_text
            entry["cases"].append(rec)
        out["formats"].append(entry)
    path = DIR / "llama_cpp_builtin.json"
    path.write_text(json.dumps(out, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {path} with {out['reference']}")


if __name__ == "__main__":
    main()
