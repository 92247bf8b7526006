"""What does a budget in plain words cost an OpenAI client of ``s1-integrations serve``?

One server, started as users start it (``s1-integrations serve``, its defaults), and N chat
completions at once through its OpenAI API, as any client sends them. Budgeted requests carry
the budget in plain words in ``vllm_xargs`` (resolved on the server into token ids, then
forced by the processor); the same requests without a budget then generate exactly as many
tokens each (``min_tokens == max_tokens ==`` what the budgeted one generated, ``ignore_eos``),
so both do the same model work and the difference is the plain-word resolution, the
processor and the processed log-probabilities nobody asked for here.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx

from bench.common import BenchConfig, measure, questions
from bench.report import Report, Row

TARGET = 1.10
START_TIMEOUT_S = 900


def xargs(cfg: BenchConfig) -> dict[str, Any]:
    """Extensions and a cap, so the processor both extends and cuts in every request."""
    if cfg.quick:
        return {"max_thinking_tokens": 8, "max_answer_tokens": 16}
    return {"extensions": 2, "max_thinking_tokens": 80, "extension_phrases": "Wait"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def served(max_num_seqs: int) -> Iterator[str]:
    """``s1-integrations serve`` on a free port (its own defaults otherwise); its base URL."""
    port = _free_port()
    argv = [sys.executable, "-m", "s1_integrations.cli", "serve", "--port", str(port)]
    argv += ["--max-num-seqs", str(max_num_seqs), "--seed", "0"]
    log = tempfile.NamedTemporaryFile(  # noqa: SIM115 (closed below)
        prefix="bench-serve-", suffix=".log", delete=False
    )
    process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"s1-integrations serve exited; see {log.name}")
            try:
                if httpx.get(url + "/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"s1-integrations serve did not start; see {log.name}")
            time.sleep(1)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()
        os.unlink(log.name)


async def _completions(url: str, model: str, bodies: list[dict[str, Any]]) -> list[int]:
    """All requests at once; the completion tokens of each."""
    limits = httpx.Limits(max_connections=len(bodies) + 4)
    async with httpx.AsyncClient(timeout=600, limits=limits) as client:

        async def one(extra: dict[str, Any], question: str) -> int:
            request = {
                "model": model,
                "messages": [{"role": "user", "content": question}],
                "temperature": 0,
                **extra,
            }
            reply = await client.post(url + "/v1/chat/completions", json=request)
            reply.raise_for_status()
            return int(reply.json()["usage"]["completion_tokens"])

        return list(await asyncio.gather(*(one(b, b.pop("_question")) for b in bodies)))


def run_server(cfg: BenchConfig, concurrency: int | None = None) -> Report:
    n = concurrency or (2 if cfg.quick else 32)
    prompts = questions(n)
    budget = xargs(cfg)
    limit = 64 if cfg.quick else 400
    with served(max(n, 32)) as url:
        model = httpx.get(url + "/v1/models", timeout=30).json()["data"][0]["id"]

        def budgeted_bodies() -> list[dict[str, Any]]:
            return [
                {"_question": q, "max_tokens": limit, "vllm_xargs": dict(budget)} for q in prompts
            ]

        counts = asyncio.run(_completions(url, model, budgeted_bodies()))

        def plain_bodies() -> list[dict[str, Any]]:
            return [
                {"_question": q, "max_tokens": c, "min_tokens": c, "ignore_eos": True}
                for q, c in zip(prompts, counts, strict=True)
            ]

        def budgeted() -> int:
            return sum(asyncio.run(_completions(url, model, budgeted_bodies())))

        def plain() -> int:
            return sum(asyncio.run(_completions(url, model, plain_bodies())))

        t = measure([("budgeted", budgeted), ("no budget", plain)], cfg.repeats, cfg.warmup)
    report = Report(
        "server",
        f"server: {n} concurrent chat completions through s1-integrations serve, "
        "budget in plain words vs none",
    )
    report.rows.append(
        Row(
            "budgeted vs no budget (same tokens)",
            t["budgeted"],
            t["no budget"],
            TARGET,
            extra={"tokens": f"{t['budgeted'].tokens} / {t['no budget'].tokens}"},
        )
    )
    report.notes.append(
        f"budget vllm_xargs {budget}; {sum(counts)} completion tokens per run over {n} "
        "requests; the server's CPU time is counted (it is a child of this process)"
    )
    report.data["counts"] = counts
    return report
