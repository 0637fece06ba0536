"""Load test of `suffixtune serve` on 127.0.0.1: N concurrent clients for T seconds, bounded in both.

Starts the server as a subprocess on a free local port, sends single-text requests for every loaded task from
N clients back to back, then reports requests/s, p50/p99 latency, errors, and the server's batching stats.

    python bench/load_test.py runs/sms/suffix runs/sst2/suffix --texts ../shared/data/sms_spam/test.csv --column Text
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import time
from datetime import date

import httpx

from suffixtune.tasks.data import read_table

MAX_CLIENTS, MAX_SECONDS = 64, 120


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until_up(url: str, server: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            sys.exit(f"the server exited with code {server.returncode}: {server.stderr.read().decode()[-2000:]}")
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    sys.exit(f"the server did not answer {url}/healthz within {timeout:.0f} s")


async def client(url: str, texts: list[str], stop_at: float, latencies: list[float], errors: list[str], seed: int) -> None:
    rng = random.Random(seed)
    async with httpx.AsyncClient(base_url=url, timeout=120) as http:
        while time.monotonic() < stop_at:
            start = time.perf_counter()
            try:
                answer = await http.post("/v1/classify", json={"texts": [rng.choice(texts)]})
                if answer.status_code != 200:
                    errors.append(f"{answer.status_code}: {answer.text[:200]}")
                    continue
            except httpx.HTTPError as error:
                errors.append(repr(error))
                continue
            latencies.append(time.perf_counter() - start)


async def load(url: str, texts: list[str], clients: int, seconds: float) -> tuple[list[float], list[str], float]:
    latencies: list[float] = []
    errors: list[str] = []
    start = time.monotonic()
    await asyncio.gather(*(client(url, texts, start + seconds, latencies, errors, seed) for seed in range(clients)))
    return latencies, errors, time.monotonic() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("artifacts", nargs="+", help="[NAME=]DIR, two or more")
    parser.add_argument("--texts", help="CSV/TSV/JSONL/Parquet file to draw texts from (default: made-up sentences)")
    parser.add_argument("--column", default="text")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--max-wait-ms", default="5")
    parser.add_argument("--max-batch-texts", default="64")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--startup-timeout", type=float, default=300)
    args = parser.parse_args()
    if len(args.artifacts) < 2:
        sys.exit("give two or more artifacts: the point is many tasks per request")
    if not 1 <= args.clients <= MAX_CLIENTS or not 0 < args.seconds <= MAX_SECONDS:
        sys.exit(f"--clients must be 1..{MAX_CLIENTS} and --seconds 0..{MAX_SECONDS}")
    if args.texts:
        texts = [t for t in read_table(args.texts)[args.column].astype(str) if t.strip()]
    else:
        texts = [f"message {i}: {'win a free prize now' if i % 3 == 0 else 'see you at lunch tomorrow'}" for i in range(100)]

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "suffixtune.cli", "serve", *args.artifacts, "--host", "127.0.0.1", "--port", str(port),
               "--device", args.device, "--dtype", args.dtype, "--max-wait-ms", args.max_wait_ms, "--max-batch-texts", args.max_batch_texts]
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        wait_until_up(url, server, args.startup_timeout)
        tasks = httpx.get(f"{url}/v1/tasks").json()
        httpx.post(f"{url}/v1/classify", json={"texts": texts[:2]}, timeout=120).raise_for_status()  # warm-up
        before = httpx.get(f"{url}/v1/stats").json()
        latencies, errors, elapsed = asyncio.run(load(url, texts, args.clients, args.seconds))
        after = httpx.get(f"{url}/v1/stats").json()
    finally:
        server.terminate()
        server.wait(timeout=30)

    answered = len(latencies)
    batches = after["batches"] - before["batches"]
    quantiles = statistics.quantiles(latencies, n=100) if answered > 1 else [float("nan")] * 99
    report = {
        "date": str(date.today()), "tasks": [t["name"] for t in tasks["tasks"]], "base_model": tasks["base_model"],
        "clients": args.clients, "seconds": round(elapsed, 1), "requests": answered, "errors": len(errors),
        "requests_per_s": answered / elapsed, "p50_ms": quantiles[49] * 1000, "p99_ms": quantiles[98] * 1000,
        "model_calls": batches, "mean_requests_per_call": (after["requests"] - before["requests"]) / max(batches, 1),
        "largest_call_requests": after["largest_batch_requests"], "max_wait_ms": float(args.max_wait_ms),
        "device": args.device, "dtype": args.dtype,
    }
    print(json.dumps(report, indent=2))
    for error in errors[:5]:
        print("error:", error, file=sys.stderr)
    if errors:
        sys.exit(1)


if __name__ == "__main__":
    main()
