"""Drives a running Mori server with Ollama's official Python client.

Usage: python ollama_client.py BASE_URL API_KEY MODEL
"""
import sys

import httpx
import ollama

base, key, model = sys.argv[1], sys.argv[2], sys.argv[3]
client = ollama.Client(host=base, headers={"Authorization": f"Bearer {key}"})


def check(name, cond, detail=""):
    if not cond:
        print(f"FAIL {name}: {detail}")
        sys.exit(1)
    print(f"ok   {name}")


names = [m.model for m in client.list().models]
check("list (api/tags) names the model", model in names, names)
show = client.show(model)
check("show: details and template", show.details.format == "gguf" and show.details.family == "llama", show)

msgs = [{"role": "user", "content": "Tell me a joke."}]
opts = {"seed": 11, "num_predict": 20, "temperature": 0.9}
r = client.chat(model=model, messages=msgs, options=opts)
check("chat: an answer and counts", r.message.role == "assistant" and r.message.content and r.done
      and r.eval_count <= 20 and r.prompt_eval_count > 0, r)
r2 = client.chat(model=model, messages=msgs, options=opts)
check("chat: same seed, same answer", r2.message.content == r.message.content)
parts = list(client.chat(model=model, messages=msgs, options=opts, stream=True))
check("chat stream: same text, done at the end",
      "".join(p.message.content for p in parts) == r.message.content and parts[-1].done and not parts[0].done
      and parts[-1].done_reason in ("stop", "length"), parts[-1])

g = client.generate(model=model, prompt="The secret of life is", options={"seed": 3, "num_predict": 12})
check("generate: a response", g.response and g.done and g.eval_count <= 12, g)
gs = list(client.generate(model=model, prompt="The secret of life is", options={"seed": 3, "num_predict": 12}, stream=True))
check("generate stream: same text", "".join(p.response for p in gs) == g.response)

ps = client.ps()
check("ps: the model is loaded", any(m.model == model for m in ps.models), ps)
v = httpx.get(base + "/api/version").json()
check("version", "version" in v, v)

try:
    client.chat(model="no-such-model", messages=msgs)
    check("unknown model -> ResponseError 404", False, "no error")
except ollama.ResponseError as e:
    check("unknown model -> ResponseError 404", e.status_code == 404 and "no-such-model" in e.error, (e.status_code, e.error))

try:
    client.generate(model=model, prompt="word " * 3000)
    check("prompt over the context -> ResponseError 400", False, "no error")
except ollama.ResponseError as e:
    check("prompt over the context -> ResponseError 400", e.status_code == 400 and "context" in e.error, e.error)

try:
    ollama.Client(host=base).chat(model=model, messages=msgs)
    check("missing key -> ResponseError 401", False, "no error")
except ollama.ResponseError as e:
    check("missing key -> ResponseError 401", e.status_code == 401, (e.status_code, e.error))
print("all Ollama client checks passed")
