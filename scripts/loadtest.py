#!/usr/bin/env python3
"""Load test for `mori serve`: many concurrent streaming chat clients for a while.

Each client loops: POST /v1/chat/completions with stream=true, read the SSE stream
to its end, check that it ends with `data: [DONE]`, repeat. A 503 with Retry-After
(the documented answer of a full queue) is counted and retried after the time it
asks for; anything else is a failure. With --disconnect-half, half of the clients
hang up after a few chunks of every answer, and the server must free their slots.

The server's resident memory (VmRSS of --pid) is sampled after a warm-up and at the
end; the run fails if it grew by more than 10% (+8 MiB) or if any request failed.

Usage:
    python scripts/loadtest.py --url http://127.0.0.1:11434 --model mori-fortunes --pid PID \
        [--clients 32] [--seconds 60] [--disconnect-half]
Prints one JSON line with the figures.
"""

import argparse
import asyncio
import json
import random
import sys
import time

import httpx


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


async def client(i, args, stats, deadline):
    hang_up = args.disconnect_half and i % 2 == 1
    rng = random.Random(i)
    async with httpx.AsyncClient(timeout=httpx.Timeout(120.0)) as http:
        while time.monotonic() < deadline:
            body = {
                "model": args.model,
                "messages": [{"role": "user", "content": f"Client {i} says hello {rng.randrange(1000)}"}],
                "max_tokens": rng.randrange(16, 64),
                "stream": True,
                "seed": rng.randrange(1 << 30),
            }
            try:
                async with http.stream("POST", args.url + "/v1/chat/completions", json=body) as r:
                    if r.status_code in (429, 503):
                        stats["refused"] += 1
                        await asyncio.sleep(float(r.headers.get("retry-after", "1")))
                        continue
                    if r.status_code != 200:
                        stats["failures"].append(f"status {r.status_code}: {(await r.aread())[:200]!r}")
                        continue
                    events, last = 0, None
                    async for line in r.aiter_lines():
                        if not line.startswith("data: "):
                            continue
                        events += 1
                        last = line[6:]
                        if hang_up and events >= 3:
                            break
                    if hang_up and events >= 3:
                        stats["hung_up"] += 1
                        continue
                    if last != "[DONE]":
                        stats["failures"].append(f"stream ended without [DONE] (last: {last!r})")
                        continue
                    stats["completed"] += 1
                    stats["events"] += events
            except httpx.HTTPError as e:
                stats["failures"].append(f"{type(e).__name__}: {e}")


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--pid", type=int, required=True)
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--disconnect-half", action="store_true")
    args = ap.parse_args()

    stats = {"completed": 0, "hung_up": 0, "refused": 0, "events": 0, "failures": []}
    # Warm-up: load the model and let the allocator reach its working size.
    warm = time.monotonic() + min(5.0, args.seconds / 6)
    await asyncio.gather(*(client(i, args, {"completed": 0, "hung_up": 0, "refused": 0, "events": 0, "failures": []}, warm)
                           for i in range(args.clients)))
    rss_warm = rss_kib(args.pid)
    t0 = time.monotonic()
    await asyncio.gather(*(client(i, args, stats, t0 + args.seconds) for i in range(args.clients)))
    elapsed = time.monotonic() - t0
    # Let the server finish what the last hung-up clients started.
    await asyncio.sleep(2.0)
    health = httpx.get(args.url + "/health").json()
    rss_end = rss_kib(args.pid)
    out = {
        "clients": args.clients, "seconds": round(elapsed, 1), "disconnect_half": args.disconnect_half,
        "completed": stats["completed"], "hung_up": stats["hung_up"], "refused_503": stats["refused"],
        "failures": len(stats["failures"]), "stream_events": stats["events"],
        "rss_warm_mib": round(rss_warm / 1024, 1), "rss_end_mib": round(rss_end / 1024, 1),
        "running_after": health["running"], "waiting_after": health["waiting"],
    }
    print(json.dumps(out))
    ok = True
    if stats["failures"]:
        print("failures (first 5):", *stats["failures"][:5], sep="\n  ", file=sys.stderr)
        ok = False
    if rss_end > rss_warm * 1.10 + 8 * 1024:
        print(f"memory grew from {rss_warm} KiB to {rss_end} KiB", file=sys.stderr)
        ok = False
    if health["running"] != 0 or health["waiting"] != 0:
        print(f"slots still busy after the run: {health}", file=sys.stderr)
        ok = False
    if stats["completed"] == 0:
        print("no request completed", file=sys.stderr)
        ok = False
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    asyncio.run(main())
