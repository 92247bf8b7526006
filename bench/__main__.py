"""``python -m bench <comparison>``: run side-by-side benchmarks on one engine.

One engine serves every comparison (it is started with a reasoning parser so vLLM's own
``thinking_token_budget`` can run beside ours in ``cap``); each comparison prints medians and
the ratio time-of-ours / time-of-the-other.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench import (
    adapters,
    adaptive,
    breakdown,
    cap,
    extensions,
    overhead,
    processor,
    samples,
    scaling,
    server,
)
from bench.common import BenchConfig, cpu_model
from bench.report import Report, render

if TYPE_CHECKING:
    from s1_integrations.core.generator import BudgetForcedGenerator

Runner = Callable[["BudgetForcedGenerator", BenchConfig], Report]

COMPARISONS: dict[str, Runner] = {
    "overhead": overhead.run,
    "extensions": extensions.run,
    "cap": cap.run,
    "adapters": adapters.run,
    "scaling": scaling.run,
    "samples": samples.run,
    "adaptive": adaptive.run,
}
#: Diagnostics: run by name only, not by ``all``.
DIAGNOSTICS: dict[str, Runner] = {"breakdown": breakdown.run}
#: Through a server of their own instead of the in-process engine: by name only.
SERVED: dict[str, Callable[[BenchConfig], Report]] = {"server": server.run_server}
#: Without an engine at all (the processor driven as vLLM's worker drives it): by name only.
ENGINE_FREE: dict[str, Callable[[BenchConfig], Report]] = {"processor": processor.run}
#: What runs without the in-process engine, and what its wall time includes.
STANDALONE = {**SERVED, **ENGINE_FREE}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("comparison", choices=[*COMPARISONS, "all", *DIAGNOSTICS, *STANDALONE])
    parser.add_argument("--model", default=None, help="model folder (default: the toy reasoner)")
    parser.add_argument("--batch-size", type=int, default=None, help="prompts per batch (64)")
    parser.add_argument("--repeats", type=int, default=None, help="timed repeats (7)")
    parser.add_argument("--quick", action="store_true", help="batch 2, 1 repeat, tiny budgets")
    parser.add_argument("--dtype", default="float32", help="engine dtype (float32 on CPU)")
    parser.add_argument(
        "--reasoning-parser",
        default="deepseek_r1",
        help="vLLM reasoning parser for the engine ('' for none; 'cap' then cannot run)",
    )
    parser.add_argument(
        "--no-gc-freeze",
        dest="gc_freeze",
        action="store_false",
        help="start the engine with freeze_gc=False (by default it freezes the gc heap once "
        "started, as vLLM's own server does; see docs/benchmarks-history.md)",
    )
    parser.add_argument(
        "--gc-freeze", dest="gc_freeze", action="store_true", help=argparse.SUPPRESS
    )  # the default since the engine freezes by itself; kept for the recorded commands
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    return parser.parse_args(argv)


def config_from(args: argparse.Namespace) -> BenchConfig:
    cfg = BenchConfig.tiny() if args.quick else BenchConfig()
    changes = {}
    if args.batch_size is not None:
        changes["batch_size"] = args.batch_size
    if args.repeats is not None:
        changes["repeats"] = args.repeats
    if not changes:
        return cfg
    from dataclasses import replace

    return replace(cfg, **changes)


def build_generator(args: argparse.Namespace, cfg: BenchConfig) -> BudgetForcedGenerator:
    from s1_integrations.core.generator import BudgetForcedGenerator

    engine_args: dict[str, Any] = {
        "dtype": args.dtype,
        "seed": 0,
        "max_num_seqs": max(128, cfg.batch_size, *cfg.scaling_batches),
        "freeze_gc": args.gc_freeze,
    }
    if args.reasoning_parser:
        engine_args.update(cap.reasoning_engine_args(args.reasoning_parser))
    return BudgetForcedGenerator(args.model, **engine_args)


def main(argv: list[str] | None = None) -> int:
    from rich.console import Console

    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    args = parse_args(argv)
    cfg = config_from(args)
    console = Console(width=None if sys.stdout.isatty() else 160)
    if args.comparison in STANDALONE:
        return _main_standalone(args, cfg, console, argv)
    names = list(COMPARISONS) if args.comparison == "all" else [args.comparison]
    started = time.perf_counter()
    gen = build_generator(args, cfg)
    console.print(
        f"[bold]machine[/]: {cpu_model()}, {os.cpu_count()} cores; python {sys.version.split()[0]}"
        f"; model {gen.model_name}; {cfg}; engine freeze_gc {args.gc_freeze}"
        f"; engine start {time.perf_counter() - started:.0f} s\n"
    )
    reports: list[Report] = []
    try:
        for name in names:
            t0, load = time.perf_counter(), os.getloadavg()[0]
            report = {**COMPARISONS, **DIAGNOSTICS}[name](gen, cfg)
            report.notes.append(
                f"wall time {time.perf_counter() - t0:.0f} s; 1-minute load average "
                f"{load:.1f} before, {os.getloadavg()[0]:.1f} after (other jobs skew wall times)"
            )
            render(report, console)
            reports.append(report)
    finally:
        gen.close()
    _write_json(args, cfg, reports, argv)
    return _missed(reports, console)


def _main_standalone(
    args: argparse.Namespace, cfg: BenchConfig, console: Any, argv: list[str] | None
) -> int:
    """A comparison without the in-process engine: through its own server, or engine-free."""
    if args.model is not None:
        raise SystemExit(f"--model: the {args.comparison} comparison runs on the toy reasoner")
    console.print(
        f"[bold]machine[/]: {cpu_model()}, {os.cpu_count()} cores; python "
        f"{sys.version.split()[0]}; {cfg}\n"
    )
    t0, load = time.perf_counter(), os.getloadavg()[0]
    report = STANDALONE[args.comparison](cfg)
    including = " (server start included)" if args.comparison in SERVED else ""
    report.notes.append(
        f"wall time {time.perf_counter() - t0:.0f} s{including}; 1-minute load "
        f"average {load:.1f} before, {os.getloadavg()[0]:.1f} after (other jobs skew wall times)"
    )
    render(report, console)
    _write_json(args, cfg, [report], argv)
    return _missed([report], console)


def _write_json(
    args: argparse.Namespace, cfg: BenchConfig, reports: list[Report], argv: list[str] | None
) -> None:
    if args.json is not None:
        payload = {
            "command": " ".join(["python -m bench", *(argv if argv is not None else sys.argv[1:])]),
            "cpu": cpu_model(),
            "cores": os.cpu_count(),
            "config": cfg.__dict__,
            "gc_freeze": args.gc_freeze,
            "reports": [r.to_json() for r in reports],
        }
        args.json.write_text(json.dumps(payload, indent=2, default=str))


def _missed(reports: list[Report], console: Any) -> int:
    missed = [r.label for rep in reports for r in rep.rows if r.met is False]
    if missed:
        console.print(f"[red]targets missed[/]: {', '.join(missed)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
