"""Issue 6 on a GPU: single-pass forcing vs plain vLLM on a Qwen3-1.7B-shaped model.

    python -m bench.gpu --out DIR                 # on a CUDA machine with vLLM
    python -m bench.gpu --tiny --out DIR          # CPU smoke test of this script (tiny model)

The model is built on the spot from a config (no weights to download): Qwen3-1.7B's shapes
(hidden 2048, MLP 6144, 28 layers, 16 query / 8 KV heads of 128, tied embeddings, bf16) with
random weights (normal, std 0.02; norms 1), and the toy reasoner's tokenizer, which has the
``<think>``/``</think>`` delimiters the generator needs.

Vocabulary: Qwen3's full 151,936 rows, so the embedding / LM head and every per-step pass
over the logits (vLLM's sampler and log-probabilities, our processor's argmax and masks) cost
what they cost on the real model. Only the first 320 ids exist in the toy tokenizer, so the
rows of every other id, and the row of the end-of-sequence token, are zero: those logits are
exactly 0 while the 319 live ones are random with a positive maximum, so greedy decoding only
ever picks decodable ids, and never the end of sequence (each answer runs to
``max_answer_tokens``, which keeps the token counts of both contenders fixed).

The measurement is ``bench overhead``'s: single-pass ``BudgetForcedGenerator.generate`` over
64 held-out questions, then plain vLLM generating exactly as many tokens per prompt
(``min_tokens == max_tokens``, ``ignore_eos``, final-only output) on the same engine; one
warm-up each, then interleaved repeats in a rotating order; medians and their ratio.
The engine is started as ``python -m bench`` starts it (seed 0, ``max_num_seqs`` 128, the
``deepseek_r1`` reasoning parser, gc frozen), otherwise with vLLM's defaults for the GPU
(torch.compile, CUDA graphs, async scheduling).

Everything that touches CUDA in this process runs in a child process (model build, device
info, the processor micro-benchmark), so vLLM can fork its engine core as usual.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

TARGET = 1.03
TOY_VOCAB = 320  # ids the toy tokenizer can decode
TOY_MODEL = Path(__file__).resolve().parents[1] / "src" / "s1_integrations" / "toy" / "model"

QWEN3_1P7B: dict[str, Any] = {
    "hidden_size": 2048,
    "intermediate_size": 6144,
    "num_hidden_layers": 28,
    "num_attention_heads": 16,
    "num_key_value_heads": 8,
    "head_dim": 128,
    "rms_norm_eps": 1e-6,
    "rope_theta": 1_000_000.0,
    "max_position_embeddings": 40960,
    "tie_word_embeddings": True,
    "vocab_size": 151936,
}
TINY: dict[str, Any] = {  # CPU smoke test only
    **QWEN3_1P7B,
    "hidden_size": 128,
    "intermediate_size": 384,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "num_key_value_heads": 2,
    "head_dim": 64,
    "max_position_embeddings": 4096,
    "vocab_size": 4096,
}

#: (name, ThinkingBudget fields). The first is `bench overhead`'s budget with a fixed answer
#: length; the second thinks longer, so more of each run is spent in forced thinking.
VARIANTS: dict[str, dict[str, Any]] = {
    "think80": {"extensions": 2, "max_thinking_tokens": 80, "max_answer_tokens": 16},
    "think512": {"extensions": 2, "max_thinking_tokens": 512, "max_answer_tokens": 64},
}
TINY_VARIANTS: dict[str, dict[str, Any]] = {
    "think80": {"extensions": 2, "max_thinking_tokens": 24, "max_answer_tokens": 8},
}


def log(msg: str) -> None:
    print(f"[gpu.py {time.strftime('%H:%M:%S')}] {msg}", flush=True)


# -- the model ---------------------------------------------------------------------------


def build_model(path: Path, shapes: dict[str, Any], device: str, seed: int = 0) -> None:
    """Write a Qwen3 folder with random weights and the toy reasoner's tokenizer."""
    import torch
    from safetensors.torch import save_file
    from transformers import Qwen3Config, Qwen3ForCausalLM

    started = time.perf_counter()
    toy = TOY_MODEL  # not via s1_integrations: this step needs no pydantic
    fields = dict(shapes)
    rope_theta = fields.pop("rope_theta")
    config = Qwen3Config(
        **fields,
        architectures=["Qwen3ForCausalLM"],
        rope_parameters={"rope_type": "default", "rope_theta": rope_theta},
        dtype="bfloat16",
        bos_token_id=None,
        eos_token_id=2,
        pad_token_id=0,
    )
    path.mkdir(parents=True, exist_ok=True)
    config.save_pretrained(path)
    for name in ("tokenizer.json", "chat_template.jinja", "generation_config.json"):
        shutil.copy(toy / name, path / name)
    tok_config = json.loads((toy / "tokenizer_config.json").read_text())
    tok_config["model_max_length"] = shapes["max_position_embeddings"]
    (path / "tokenizer_config.json").write_text(json.dumps(tok_config, indent=2))

    with torch.device("meta"):  # the names and shapes transformers expects
        expected = {
            k: tuple(v.shape)
            for k, v in Qwen3ForCausalLM(config).state_dict().items()
            if k != "lm_head.weight"  # tied
        }
    gen = torch.Generator(device=device).manual_seed(seed)
    tensors: dict[str, torch.Tensor] = {}
    for name, shape in expected.items():
        if name.endswith("norm.weight"):
            t = torch.ones(shape, dtype=torch.bfloat16, device=device)
        else:
            t = torch.empty(shape, dtype=torch.float32, device=device)
            t.normal_(0.0, 0.02, generator=gen)
            t = t.to(torch.bfloat16)
        tensors[name] = t
    embed = tensors["model.embed_tokens.weight"]
    embed[TOY_VOCAB:] = 0  # ids the tokenizer cannot decode: logit exactly 0, never chosen
    embed[2] = 0  # end of sequence (<|im_end|>): never chosen, answers run to their cap
    save_file(
        {k: v.contiguous().cpu() for k, v in tensors.items()}, str(path / "model.safetensors")
    )
    n = sum(v.numel() for v in tensors.values())
    took = time.perf_counter() - started
    log(f"model written to {path}: {n / 1e9:.3f} B parameters in {took:.1f} s")


def device_info() -> dict[str, Any]:
    import torch

    info: dict[str, Any] = {"torch": torch.__version__, "cuda": torch.version.cuda}
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        info.update(
            gpu=p.name,
            gpu_memory_gib=round(p.total_memory / 2**30, 1),
            multiprocessors=p.multi_processor_count,
            capability=f"{p.major}.{p.minor}",
        )
    return info


def micro(rows: int, vocab: int, device: str, iters: int = 200) -> dict[str, float]:
    """Microseconds per call of the processor's per-step tensor work on a float32 logits batch.

    Each timed call ends with a synchronisation, as the processor's ``argmax(...).tolist()``
    does; the engine pays these while the GPU still runs the step, so this is a lower bound.
    """
    import torch

    logits = torch.randn(rows, vocab, device=device)
    idx = list(range(0, rows, 2))
    tokens = [5] * len(idx)
    ids = torch.tensor([4, 2], device=device)

    def sync() -> None:
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    def argmax_tolist() -> None:
        logits.argmax(dim=-1).tolist()

    def tensors_from_lists() -> None:
        torch.tensor(idx, device=device)
        torch.tensor(tokens, device=device)

    def force_rows() -> None:  # as apply() forces tokens
        rows = torch.tensor(idx, device=device)
        logits.index_fill_(0, rows, float("-inf"))
        logits[rows, torch.tensor(tokens, device=device)] = 0.0

    def mask_rows() -> None:  # as _decide() rules out an attempt
        logits[torch.tensor(idx, device=device).unsqueeze(1), ids] = float("-inf")

    cases: dict[str, Any] = {
        "argmax_tolist": argmax_tolist,
        "tensor_from_list_x2": tensors_from_lists,
        "force_rows": force_rows,
        "mask_rows": mask_rows,
        "sync_only": lambda: None,
    }
    out: dict[str, float] = {}
    for name, fn in cases.items():
        for _ in range(10):
            fn()
        sync()
        times = []
        for _ in range(iters):
            t0 = time.perf_counter()
            fn()
            sync()
            times.append(time.perf_counter() - t0)
        out[name] = round(statistics.median(times) * 1e6, 1)
    return out


# -- the measurement ---------------------------------------------------------------------


def measure_variant(
    gen: Any, name: str, fields: dict[str, Any], batch: int, repeats: int, warmup: int, deltas: bool
) -> tuple[Any, dict[str, Any]]:
    from bench.common import forced_vs_plain, measure, questions
    from bench.report import Report, Row
    from s1_integrations import ThinkingBudget

    b = ThinkingBudget(**fields)
    t0 = time.perf_counter()
    pair = forced_vs_plain(gen, questions(batch), b)
    first_s = time.perf_counter() - t0  # includes prepare(), as the first run pays it anyway
    first, counts, plain = pair.first, pair.counts, pair.plain
    forced_tokens: list[int] = []

    def forced() -> int:
        n = pair.forced()
        forced_tokens.append(n)
        return n

    contenders = [("single-pass", forced), ("plain vLLM (final only)", lambda: plain("final"))]
    if deltas:
        contenders.append(("plain vLLM (streamed deltas)", lambda: plain("delta")))
    t = measure(contenders, repeats, warmup)
    report = Report(f"gpu-{name}", f"{name}: single-pass forcing vs plain vLLM, batch {batch}")
    for other, target in (
        ("plain vLLM (final only)", TARGET),
        ("plain vLLM (streamed deltas)", None),
    ):
        if other in t:
            report.rows.append(
                Row(
                    f"{name}: single-pass vs {other}",
                    t["single-pass"],
                    t[other],
                    target,
                    extra={"tokens": f"{t['single-pass'].tokens} / {t[other].tokens}"},
                )
            )
    total = sum(counts)
    same = all(n == total for n in forced_tokens) and t["plain vLLM (final only)"].tokens == total
    # Budgets honoured exactly (the processor saw every token, e.g. under async scheduling).
    cap, answer_cap = b.max_thinking_tokens, b.max_answer_tokens
    off_budget = [
        i
        for i, r in enumerate(first)
        if (cap is not None and r.thinking_tokens > cap)
        or (r.thinking_ended_by == "budget" and r.thinking_tokens != cap)
        or r.extensions > b.extensions
        or (answer_cap is not None and r.answer_tokens > answer_cap)
    ]
    report.notes.append(
        f"budget {b.model_dump(exclude_defaults=True)}; {total} tokens per run "
        f"({min(counts)}..{max(counts)} per prompt), "
        f"{sum(r.extensions for r in first)} extensions, "
        f"{sum(r.thinking_ended_by == 'budget' for r in first)} capped; first (untimed) forced run "
        f"{first_s:.2f} s (with prepare); "
        f"forced token totals over the repeats {sorted(set(forced_tokens))}"
        + ("" if same else " (DIFFER from the plain runs' count)")
        + (f"; OFF BUDGET: requests {off_budget}" if off_budget else "; every budget exact")
    )
    data = {
        "budget": b.model_dump(),
        "counts": counts,
        "extensions": sum(r.extensions for r in first),
        "capped": sum(r.thinking_ended_by == "budget" for r in first),
        "thinking_ended_by": {
            k: sum(r.thinking_ended_by == k for r in first)
            for k in {str(r.thinking_ended_by) for r in first}
        },
        "forced_tokens_per_repeat": forced_tokens,
        "same_tokens": same,
        "off_budget": off_budget,
        "seconds": {k: v.seconds for k, v in t.items()},
        "medians": {k: v.median for k, v in t.items()},
        "ratio_final_only": t["single-pass"].median / t["plain vLLM (final only)"].median,
    }
    report.data = data
    return report, data


def child(*args: str) -> str:
    """Run this script's CUDA-touching part in a child process; its last line is JSON."""
    proc = subprocess.run(
        [sys.executable, "-m", "bench.gpu", *args], check=False, capture_output=True, text=True
    )
    sys.stderr.write(proc.stderr[-4000:])
    for line in proc.stdout.splitlines():
        if not line.startswith("{"):
            print(line, flush=True)
    proc.check_returncode()
    return proc.stdout.strip().splitlines()[-1]


def versions() -> dict[str, str]:
    from importlib import metadata

    out = {"python": sys.version.split()[0], "machine": platform.machine()}
    for name in ("vllm", "torch", "transformers", "tokenizers", "triton", "pydantic"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            try:
                out[name] = str(__import__(name).__version__)
            except Exception:
                out[name] = "-"
    return out


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench.gpu",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "gpu-out")))
    p.add_argument("--model-dir", type=Path, default=None)
    p.add_argument("--tiny", action="store_true", help="CPU smoke test: tiny model, batch 2")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--variants", default=None, help="comma-separated (default: all)")
    p.add_argument("--dtype", default=None, help="engine dtype (bfloat16; float32 with --tiny)")
    p.add_argument("--no-micro", action="store_true")
    p.add_argument(
        "--fallback-eager",
        action="store_true",
        help="if the engine fails to start, retry once with enforce_eager=True",
    )
    p.add_argument(
        "--deadline-s",
        type=float,
        default=0,
        help="start no further variant after this many seconds (0: no limit)",
    )
    p.add_argument(
        "--engine-arg",
        action="append",
        default=[],
        metavar="KEY=JSON",
        help="extra engine argument, e.g. enforce_eager=true",
    )
    # internal: the child processes
    p.add_argument("--child", choices=["build", "info", "micro"], help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    shapes = TINY if args.tiny else QWEN3_1P7B
    device = "cpu" if args.tiny else "cuda"
    if args.child == "build":
        build_model(args.model_dir, shapes, device)
        print(json.dumps({"ok": True}))
        return 0
    if args.child == "info":
        print(json.dumps(device_info()))
        return 0
    if args.child == "micro":
        print(json.dumps(micro(args.batch_size, shapes["vocab_size"], device)))
        return 0

    started = time.perf_counter()
    args.out.mkdir(parents=True, exist_ok=True)
    model_dir = args.model_dir or Path(
        "/tmp/s1-gpu-qwen3-tiny" if args.tiny else "/tmp/s1-gpu-qwen3-1.7b-random"
    )
    from bench.common import cpu_model  # no CUDA: only /proc/cpuinfo

    payload: dict[str, Any] = {
        "command": " ".join(["python -m bench.gpu", *(argv if argv is not None else sys.argv[1:])]),
        "versions": versions(),
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "shapes": shapes,
        "model_dir": str(model_dir),
        "target": TARGET,
    }
    payload["device"] = json.loads(child("--child", "info", *(["--tiny"] if args.tiny else [])))
    log(f"versions {payload['versions']}; device {payload['device']}")
    if not (model_dir / "model.safetensors").exists():
        child("--child", "build", "--model-dir", str(model_dir), *(["--tiny"] if args.tiny else []))

    from rich.console import Console

    from bench.report import render
    from s1_integrations.core.generator import BudgetForcedGenerator

    engine_args: dict[str, Any] = {
        "dtype": args.dtype or ("float32" if args.tiny else "bfloat16"),
        "seed": 0,
        "max_num_seqs": max(128, args.batch_size),
        "freeze_gc": True,
        "reasoning_parser": "deepseek_r1",
    }
    for item in args.engine_arg:
        key, _, value = item.partition("=")
        engine_args[key] = json.loads(value)
    payload["engine_args"] = engine_args
    t0 = time.perf_counter()
    try:
        gen = BudgetForcedGenerator(str(model_dir), **engine_args)
    except Exception as e:
        if not args.fallback_eager or engine_args.get("enforce_eager"):
            raise
        # Recorded in the results: the numbers are then without CUDA graphs / torch.compile.
        payload["start_failure"] = repr(e)[-2000:]
        log(f"engine start failed ({e!r}); retrying with enforce_eager=True")
        engine_args["enforce_eager"] = True
        t0 = time.perf_counter()
        gen = BudgetForcedGenerator(str(model_dir), **engine_args)
    payload["engine_start_s"] = round(time.perf_counter() - t0, 1)
    log(f"engine started in {payload['engine_start_s']} s with {engine_args}")
    variants = TINY_VARIANTS if args.tiny else VARIANTS
    names = args.variants.split(",") if args.variants else list(variants)
    console = Console(width=160, record=True)
    payload["variants"] = {}
    reports = []
    try:
        for i, name in enumerate(names):
            if args.deadline_s and i > 0 and time.perf_counter() - started > args.deadline_s:
                log(f"skipping {name}: past the {args.deadline_s} s deadline")
                payload.setdefault("skipped", []).append(name)
                continue
            t0 = time.perf_counter()
            report, data = measure_variant(
                gen,
                name,
                variants[name],
                args.batch_size,
                args.repeats,
                args.warmup,
                deltas=(i == 0),
            )
            report.notes.append(f"wall time {time.perf_counter() - t0:.0f} s")
            render(report, console)
            reports.append(report)
            payload["variants"][name] = {"report": report.to_json(), **data}
            _write(args.out, payload, console)  # partial results survive a later failure
    finally:
        gen.close()
    if not args.no_micro:
        payload["micro_us"] = json.loads(
            child(
                "--child",
                "micro",
                "--batch-size",
                str(args.batch_size),
                *(["--tiny"] if args.tiny else []),
            )
        )
        log(f"processor tensor work per call (us, median): {payload['micro_us']}")
    payload["total_s"] = round(time.perf_counter() - started, 1)
    summary = [
        f"{name}: ours {d['medians']['single-pass']:.3f} s, "
        f"plain {d['medians']['plain vLLM (final only)']:.3f} s, "
        f"ratio {d['ratio_final_only']:.3f} (target <= {TARGET}), tokens {sum(d['counts'])}, "
        f"same tokens {d['same_tokens']}"
        for name, d in payload["variants"].items()
    ]
    payload["summary"] = summary
    _write(args.out, payload, console)
    print("\n".join(["SUMMARY", *summary]), flush=True)
    return 0


def _write(out: Path, payload: dict[str, Any], console: Any) -> None:
    (out / "gpu.json").write_text(json.dumps(payload, indent=2, default=str))
    (out / "gpu.txt").write_text(console.export_text(clear=False))


if __name__ == "__main__":
    raise SystemExit(main())
