"""Drives a running Mori server with OpenAI's official Python client.

Usage: python openai_client.py BASE_URL API_KEY MODEL
Exits non-zero on the first failed check; prints one line per check.
"""
import sys

import openai

base, key, model = sys.argv[1], sys.argv[2], sys.argv[3]
client = openai.OpenAI(base_url=base + "/v1", api_key=key, max_retries=0)


def check(name, cond, detail=""):
    if not cond:
        print(f"FAIL {name}: {detail}")
        sys.exit(1)
    print(f"ok   {name}")


def expect_error(name, exc_type, fn, code=None):
    try:
        fn()
    except exc_type as e:
        if code is not None and getattr(e, "code", None) != code:
            check(name, False, f"code {getattr(e, 'code', None)!r}, expected {code!r}: {e}")
        check(name, True)
        return e
    except Exception as e:  # noqa: BLE001
        check(name, False, f"raised {type(e).__name__}: {e}")
    check(name, False, "no error raised")


msgs = [{"role": "system", "content": "Be witty."}, {"role": "user", "content": "Tell me a joke about computers."}]

ids = [m.id for m in client.models.list()]
check("models.list names the model", model in ids, ids)

r = client.chat.completions.create(model=model, messages=msgs, max_tokens=24, seed=7, temperature=0.9)
check("chat: one choice with text", len(r.choices) == 1 and r.choices[0].message.content, r)
check("chat: stable completion id", r.id.startswith("chatcmpl-") and len(r.id) > 12, r.id)
check("chat: usage adds up", r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
      and r.usage.completion_tokens <= 24, r.usage)
check("chat: finish_reason", r.choices[0].finish_reason in ("stop", "length"), r.choices[0].finish_reason)

r2 = client.chat.completions.create(model=model, messages=msgs, max_tokens=24, seed=7, temperature=0.9)
check("chat: same seed, same answer", r2.choices[0].message.content == r.choices[0].message.content,
      (r.choices[0].message.content, r2.choices[0].message.content))

r3 = client.chat.completions.create(model=model, messages=msgs, max_tokens=24, seed=8, temperature=0.9)
check("chat: another seed, another answer", r3.choices[0].message.content != r.choices[0].message.content)

stream = client.chat.completions.create(model=model, messages=msgs, max_tokens=24, seed=7, temperature=0.9,
                                        stream=True, stream_options={"include_usage": True})
text, finish, usage, chunk_ids = "", None, None, set()
for chunk in stream:
    chunk_ids.add(chunk.id)
    if chunk.usage is not None:
        usage = chunk.usage
    for c in chunk.choices:
        text += c.delta.content or ""
        finish = c.finish_reason or finish
check("chat stream: same text as without streaming", text == r.choices[0].message.content, (text, r.choices[0].message.content))
check("chat stream: one id, a finish reason", len(chunk_ids) == 1 and finish in ("stop", "length"), (chunk_ids, finish))
check("chat stream: usage in the last chunk", usage is not None and usage.completion_tokens == r.usage.completion_tokens, usage)

r = client.chat.completions.create(model=model, messages=msgs, max_tokens=8, logprobs=True, top_logprobs=3, seed=1)
lp = r.choices[0].logprobs.content
check("chat logprobs: one per token, three alternatives",
      len(lp) == r.usage.completion_tokens and all(len(t.top_logprobs) == 3 and t.logprob <= 0 for t in lp), lp)
check("chat logprobs: alternatives sorted, chosen among them or below",
      all(t.top_logprobs[0].logprob >= t.top_logprobs[-1].logprob for t in lp))

r = client.chat.completions.create(model=model, messages=msgs, max_tokens=16, n=3, seed=3)
check("chat n=3: three indexed choices", [c.index for c in r.choices] == [0, 1, 2], r.choices)

r = client.chat.completions.create(model=model, messages=msgs, max_tokens=60, stop=["e"], seed=2)
check("chat stop: text stops before the stop sequence", "e" not in r.choices[0].message.content, r.choices[0].message.content)

c = client.completions.create(model=model, prompt="The secret of life is", max_tokens=6, echo=True, logprobs=2, seed=4)
ch = c.choices[0]
check("completion echo: text starts with the prompt", ch.text.startswith("The secret of life is"), ch.text)
n_tok = len(ch.logprobs.tokens)
check("completion echo logprobs: prompt and answer tokens",
      n_tok == c.usage.prompt_tokens + c.usage.completion_tokens and ch.logprobs.token_logprobs[0] is None
      and all(x is not None and x <= 0 for x in ch.logprobs.token_logprobs[1:]), ch.logprobs)
check("completion: id", c.id.startswith("cmpl-"), c.id)

parts = list(client.completions.create(model=model, prompt="Love is", max_tokens=6, seed=5, stream=True))
plain = client.completions.create(model=model, prompt="Love is", max_tokens=6, seed=5)
check("completion stream: same text", "".join(p.choices[0].text for p in parts if p.choices) == plain.choices[0].text)

expect_error("unknown model -> NotFoundError", openai.NotFoundError,
             lambda: client.chat.completions.create(model="no-such-model", messages=msgs), code="model_not_found")
expect_error("temperature 5 -> BadRequestError", openai.BadRequestError,
             lambda: client.chat.completions.create(model=model, messages=msgs, temperature=5))
expect_error("negative max_tokens -> BadRequestError", openai.BadRequestError,
             lambda: client.chat.completions.create(model=model, messages=msgs, max_tokens=-3))
long = "word " * 3000
e = expect_error("prompt over the context -> BadRequestError", openai.BadRequestError,
                 lambda: client.chat.completions.create(model=model, messages=[{"role": "user", "content": long}]),
                 code="context_length_exceeded")
check("context error says the sizes", "tokens" in str(e) and "context" in str(e), str(e))
bad = openai.OpenAI(base_url=base + "/v1", api_key="wrong-key", max_retries=0)
expect_error("wrong key -> AuthenticationError", openai.AuthenticationError,
             lambda: bad.chat.completions.create(model=model, messages=msgs))
print("all OpenAI client checks passed")
