"""Latency of ``GET /peers/{ticker}`` of ``finsae serve`` on loopback (target: p95 under 20 ms).

Starts the real service (``finsae serve`` in a subprocess, a random API key) over an export folder, waits for
``/health``, then requests the peers of every company with a vector, in random order, ``--rounds`` times over
one keep-alive connection (sequential), and once more from ``--concurrency`` parallel clients. Prints and
writes (``--out``) p50 / p95 / p99 / max in milliseconds, measured by the client (request sent -> body read).

    python benchmarks/serve_latency.py --export exports/forward_2017
"""

from __future__ import annotations

import argparse
import os
import secrets
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
from _common import emit, machine


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stats(ms: list[float]) -> dict[str, float]:
    a = np.asarray(ms)
    return {
        "n": int(a.size),
        "p50_ms": round(float(np.percentile(a, 50)), 2),
        "p95_ms": round(float(np.percentile(a, 95)), 2),
        "p99_ms": round(float(np.percentile(a, 99)), 2),
        "max_ms": round(float(a.max()), 2),
        "mean_ms": round(float(a.mean()), 2),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--export", type=Path, default=Path("exports/forward_2017"))
    ap.add_argument("--rounds", type=int, default=2, help="passes over all tickers, sequential")
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--out", type=Path, default=None, help="write the figures as JSON here")
    args = ap.parse_args()

    companies = pd.read_parquet(args.export / "companies.parquet")
    tickers = companies.loc[companies["has_text"], "ticker"].tolist()
    key = secrets.token_urlsafe(32)
    port = _free_port()
    env = {**os.environ, "FINSAE_API_KEY": key}
    exe = Path(sys.executable).parent / "finsae"
    proc = subprocess.Popen([str(exe), "serve", "--export", str(args.export), "--port", str(port)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"
    t0 = time.perf_counter()
    try:
        while True:
            try:
                if httpx.get(base + "/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if proc.poll() is not None:
                raise SystemExit(f"finsae serve exited: {proc.stderr.read()[-2000:]}")
            if time.perf_counter() - t0 > 120:
                raise SystemExit("finsae serve did not answer /health within 120 s")
            time.sleep(0.1)
        startup = time.perf_counter() - t0
        headers = {"X-API-Key": key}
        rng = np.random.default_rng(0)
        seq: list[float] = []
        with httpx.Client(base_url=base, headers=headers, timeout=10) as client:
            for t in tickers[:20]:  # warm-up
                client.get(f"/peers/{t}", params={"k": args.k})
            for _ in range(args.rounds):
                for t in rng.permutation(tickers):
                    s = time.perf_counter()
                    r = client.get(f"/peers/{t}", params={"k": args.k})
                    seq.append((time.perf_counter() - s) * 1000)
                    if r.status_code != 200 or len(r.json()["peers"]) != args.k:
                        raise SystemExit(f"/peers/{t}: HTTP {r.status_code} {r.text[:200]}")

        def worker(chunk: list[str]) -> list[float]:
            out = []
            with httpx.Client(base_url=base, headers=headers, timeout=10) as client:
                for t in chunk:
                    s = time.perf_counter()
                    r = client.get(f"/peers/{t}", params={"k": args.k})
                    out.append((time.perf_counter() - s) * 1000)
                    if r.status_code != 200:
                        raise SystemExit(f"/peers/{t}: HTTP {r.status_code}")
            return out

        chunks = [list(c) for c in np.array_split(rng.permutation(tickers), args.concurrency)]
        s = time.perf_counter()
        with ThreadPoolExecutor(args.concurrency) as pool:
            par = [x for part in pool.map(worker, chunks) for x in part]
        wall = time.perf_counter() - s
    finally:
        proc.terminate()
        proc.wait(10)
    result = {
        "export": str(args.export),
        "companies": int(len(companies)),
        "with_vectors": len(tickers),
        "k": args.k,
        "startup_s": round(startup, 2),
        "sequential": _stats(seq),
        "concurrent": {
            **_stats(par),
            "clients": args.concurrency,
            "requests_per_s": round(len(par) / wall, 1),
        },
        "target_p95_ms": 20.0,
        "meets_target": _stats(seq)["p95_ms"] < 20.0,
        "machine": machine(),
    }
    emit(result, args.out)


if __name__ == "__main__":
    main()
