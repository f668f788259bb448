#!/usr/bin/env python3
"""Record how Hugging Face `transformers` renders the chat templates Mori must match.

For every template under crates/mori-engine/tests/fixtures/chat_templates/ and every
conversation below, this calls `PreTrainedTokenizerFast.apply_chat_template(...,
tokenize=False)` and stores the text (or the error the template raised) in
chat_templates.json beside them. `cargo test -p mori-engine --test chat_templates`
then renders the same conversations with Mori and compares byte for byte, so CI
needs no Python.

Usage (any venv with transformers, tokenizers and jinja2; no torch needed):
    python3 -m venv /root/venvs/train
    /root/venvs/train/bin/pip install transformers tokenizers jinja2
    /root/venvs/train/bin/python scripts/record_chat_templates.py

The clock that `strftime_now` reads is frozen at NOW, which the Rust test passes too.
"""

import datetime as dt
import json
import pathlib

import transformers
import transformers.utils.chat_template_utils as ctu
from tokenizers import Tokenizer, models
from transformers import PreTrainedTokenizerFast

ROOT = pathlib.Path(__file__).resolve().parent.parent
DIR = ROOT / "crates/mori-engine/tests/fixtures/chat_templates"
NOW = dt.datetime(2026, 11, 25, 10, 30, 0)


class FrozenDatetime(dt.datetime):
    @classmethod
    def now(cls, tz=None):
        return NOW


ctu.datetime = FrozenDatetime

# Each template with the special tokens its model's tokenizer declares.
TEMPLATES = {
    "llama3": {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>"},
    "qwen2.5": {"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"},
    "qwen3": {"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"},
    "gemma2": {"bos_token": "<bos>", "eos_token": "<eos>", "pad_token": "<pad>", "unk_token": "<unk>"},
    "mistral": {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"},
    "deepseek-r1-distill": {
        "bos_token": "<｜begin▁of▁sentence｜>",
        "eos_token": "<｜end▁of▁sentence｜>",
    },
    "openpangu-embedded": {"bos_token": "<s>", "eos_token": "[unused10]", "unk_token": "<unk>", "pad_token": "<unk>"},
    "ernie4.5": {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<unk>"},
    "zephyr": {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"},
}

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "description": "City name, e.g. \"Paris\""},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["city"],
        },
    },
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
        "name": "unicode_and_escapes",
        "messages": [
            {"role": "system", "content": "あなたは親切なアシスタントです。"},
            {"role": "user", "content": "东京の天気は？ 🌸 \"quoted\" and \\ backslash\n  second line\t tab "},
        ],
        "add_generation_prompt": True,
    },
    {
        "name": "tools",
        "messages": [{"role": "user", "content": "What's the weather in Paris?"}],
        "tools": [WEATHER_TOOL],
        "add_generation_prompt": True,
    },
    {
        "name": "tool_call_round_trip",
        "messages": [
            {"role": "user", "content": "What's the weather in Paris?"},
            {
                "role": "assistant",
                "content": "",
                "tool_calls": [
                    {
                        "id": "call12345",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "call12345", "name": "get_weather", "content": "{\"temp\": 21.5}"},
        ],
        "tools": [WEATHER_TOOL],
        "add_generation_prompt": True,
    },
    {
        "name": "reasoning_history",
        "messages": [
            {"role": "user", "content": "Is 7 prime?"},
            {"role": "assistant", "content": "<think>\nIt has no divisors but 1 and 7.\n</think>\n\nYes."},
            {"role": "user", "content": "And 9?"},
        ],
        "add_generation_prompt": True,
    },
    {
        "name": "reasoning_field_and_null",
        "messages": [
            {"role": "user", "content": "Hi", "name": None},
            {"role": "assistant", "content": "Hello.", "reasoning": "Greet back."},
            {"role": "user", "content": "Bye"},
        ],
        "add_generation_prompt": True,
    },
    {
        "name": "thinking_disabled",
        "messages": [{"role": "user", "content": "Quick answer: capital of France?"}],
        "add_generation_prompt": True,
        "extra": {"enable_thinking": False},
    },
    {
        "name": "roles_out_of_order",
        "messages": [
            {"role": "user", "content": "One."},
            {"role": "user", "content": "Two."},
        ],
        "add_generation_prompt": True,
    },
    {
        "name": "explicit_date",
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Date?"}],
        "add_generation_prompt": True,
        "extra": {"date_string": "01 Jan 2025"},
    },
]


def tokenizer_for(special):
    vocab = {"<unk>": 0}
    for tok in special.values():
        vocab.setdefault(tok, len(vocab))
    inner = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    return PreTrainedTokenizerFast(tokenizer_object=inner, **special)


def main():
    out = {
        "reference": f"transformers {transformers.__version__} apply_chat_template(tokenize=False)",
        "now": NOW.isoformat(),
        "templates": [],
    }
    for name, special in TEMPLATES.items():
        source = (DIR / f"{name}.jinja").read_text(encoding="utf-8")
        tok = tokenizer_for(special)
        entry = {"name": name, "file": f"{name}.jinja", "special_tokens": special, "cases": []}
        for case in CASES:
            kwargs = dict(case.get("extra", {}))
            try:
                text = tok.apply_chat_template(
                    case["messages"],
                    tools=case.get("tools"),
                    chat_template=source,
                    add_generation_prompt=case["add_generation_prompt"],
                    tokenize=False,
                    **kwargs,
                )
                result = {"text": text}
            except Exception as e:  # the template raised: record its message
                result = {"error": str(e), "error_type": type(e).__name__}
            entry["cases"].append({**case, **result})
        out["templates"].append(entry)
    (DIR / "chat_templates.json").write_text(json.dumps(out, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    n = sum(len(t["cases"]) for t in out["templates"])
    errs = sum(1 for t in out["templates"] for c in t["cases"] if "error" in c)
    print(f"recorded {n} renders ({errs} raised) with {out['reference']}")


if __name__ == "__main__":
    main()
