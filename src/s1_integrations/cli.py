"""``s1-integrations``: ask a reasoning model, or watch budget forcing on the toy reasoner."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.panel import Panel
from rich.table import Table

from s1_integrations.core.budget import ThinkingBudget

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)
console = Console()

ModelOption = Annotated[
    str | None, typer.Option("--model", "-m", help="Model path or id (default: the toy reasoner).")
]
EngineArg = Annotated[
    list[str] | None,
    typer.Option("--engine-arg", "-e", help="vLLM engine argument KEY=VALUE (repeatable)."),
]


def _engine_args(pairs: list[str] | None) -> dict[str, Any]:
    args: dict[str, Any] = {}
    for pair in pairs or []:
        key, sep, raw = pair.partition("=")
        if not sep:
            raise typer.BadParameter(f"expected KEY=VALUE, got {pair!r}", param_hint="--engine-arg")
        value: Any = raw
        for cast in (int, float):
            try:
                value = cast(raw)
                break
            except ValueError:
                continue
        if raw.lower() in ("true", "false"):
            value = raw.lower() == "true"
        args[key.replace("-", "_")] = value
    return args


ServerOption = Annotated[
    list[str] | None,
    typer.Option(
        "--server",
        "-s",
        help="Base URL of a running vLLM server (repeatable): use it instead of starting one.",
    ),
]


def _generator(
    model: str | None, engine_args: list[str] | None, servers: list[str] | None = None
) -> Any:
    from s1_integrations.core.generator import BudgetForcedGenerator

    if servers:
        if engine_args:
            raise typer.BadParameter("engine arguments belong to the servers", param_hint="-e")
        with console.status("connecting to the vLLM servers..."):
            return BudgetForcedGenerator.from_servers(servers, model=model)
    with console.status("starting the vLLM engine..."):
        return BudgetForcedGenerator(model, **_engine_args(engine_args))


@app.command()
def ask(
    question: Annotated[str, typer.Argument(help="The question to think about.")],
    model: ModelOption = None,
    max_thinking: Annotated[int | None, typer.Option(help="Cap on thinking tokens.")] = None,
    min_thinking: Annotated[int, typer.Option(help="Minimum thinking tokens.")] = 0,
    extensions: Annotated[int, typer.Option(help="Times to suppress the end of thinking.")] = 0,
    strategy: Annotated[str, typer.Option(help="single_pass or rounds.")] = "single_pass",
    engine_arg: EngineArg = None,
    server: ServerOption = None,
) -> None:
    """Answer one question, printing the thinking and the answer apart."""
    budget = ThinkingBudget(
        max_thinking_tokens=max_thinking, min_thinking_tokens=min_thinking, extensions=extensions
    )
    with _generator(model, engine_arg, server) as generator:
        (result,) = generator.generate(question, budget, strategy=strategy)
    console.print(Panel(result.thinking.strip() or "(no thinking)", title="thinking", style="dim"))
    console.print(Panel(result.answer.strip(), title="answer"))
    console.print(
        f"thinking tokens {result.thinking_tokens}, answer tokens {result.answer_tokens}, "
        f"extensions {result.extensions}, thinking ended by {result.thinking_ended_by}, "
        f"strategy {result.strategy}"
    )


DEMO_BUDGETS: list[tuple[str, ThinkingBudget]] = [
    ("answer at once (cap 0)", ThinkingBudget(max_thinking_tokens=0)),
    ("cap 8", ThinkingBudget(max_thinking_tokens=8)),
    ("cap 24", ThinkingBudget(max_thinking_tokens=24)),
    ("no budget", ThinkingBudget()),
    ("1 extension (Wait)", ThinkingBudget(extensions=1)),
    ("2 extensions", ThinkingBudget(extensions=2)),
    ("min 60 tokens", ThinkingBudget(min_thinking_tokens=60)),
]


@app.command()
def demo(
    question: Annotated[str, typer.Option(help="Question to ask at every budget.")] = (
        "What is 4857 + 2968?"
    ),
    model: ModelOption = None,
    engine_arg: EngineArg = None,
    sweep_out: Annotated[
        Path | None, typer.Option(help="Also run the scaling sweep, writing here.")
    ] = Path("out/sweep"),
) -> None:
    """The same question at several budgets, then the accuracy-vs-thinking sweep."""
    with _generator(model, engine_arg) as generator:
        budgets = [b for _, b in DEMO_BUDGETS]
        results = generator.generate([question] * len(budgets), budgets)
        table = Table(title=f"{question}  (model: {Path(generator.model_name).name})")
        table.add_column("budget", no_wrap=True)
        for column in ("thinking tokens", "extensions", "ended by", "answer"):
            table.add_column(column)
        for (label, _), r in zip(DEMO_BUDGETS, results, strict=True):
            table.add_row(
                label,
                str(r.thinking_tokens),
                str(r.extensions),
                str(r.thinking_ended_by),
                r.answer.strip(),
            )
        console.print(table)
        longest = max(results, key=lambda r: r.extensions)
        console.print(Panel(longest.thinking.strip(), title="thinking with 2 extensions"))
        if sweep_out is not None:
            console.print("\nsweeping caps and extensions over the toy's held-out problems...")
            report = _sweep(
                generator, None, DEFAULT_CAPS, DEFAULT_EXTENSIONS, sweep_out, "exact", None
            )
            _print_summary(report)


def _parse_caps(text: str) -> list[int | None]:
    caps: list[int | None] = []
    for part in text.split(","):
        part = part.strip().lower()
        if part in ("none", "inf", "unlimited"):
            caps.append(None)
        elif part:
            caps.append(int(part))
    return caps


def _parse_ints(text: str) -> list[int]:
    return [int(p) for p in text.split(",") if p.strip()]


def _print_summary(report: Any) -> None:
    table = Table(title="accuracy against thinking")
    table.add_column("setting", no_wrap=True)
    for column in ("accuracy", "mean thinking", "p90", "extensions", "ended by cap", "wall s"):
        table.add_column(column, justify="right")
    for s in report.summaries:
        table.add_row(
            s.setting,
            f"{s.accuracy:.1%}",
            f"{s.mean_thinking_tokens:.1f}",
            f"{s.p90_thinking_tokens:.0f}",
            f"{s.mean_extensions:.2f}",
            f"{s.ended_by_cap:.0%}",
            f"{s.wall_seconds:.1f}",
        )
    console.print(table)
    for name, path in report.files.items():
        console.print(f"{name}: {path}")


def _sweep(
    generator: Any,
    dataset: str | None,
    caps: str,
    extensions: str,
    out: Path,
    scorer: str,
    limit: int | None,
) -> Any:
    from s1_integrations.scaling import get_scorer, load_jsonl, run_sweep
    from s1_integrations.scaling.sweep import settings_for
    from s1_integrations.toy import heldout_path

    pairs = load_jsonl(dataset or heldout_path())
    if limit is not None:
        pairs = pairs[:limit]
    return run_sweep(
        generator,
        pairs,
        settings_for(_parse_caps(caps), _parse_ints(extensions)),
        out,
        scorer=get_scorer(scorer),
    )


DEFAULT_CAPS = "0,4,8,16,24,32,48"
DEFAULT_EXTENSIONS = "0,1,2,4"


@app.command()
def sweep(
    dataset: Annotated[
        str | None,
        typer.Option(help="JSONL of {question, answer}; default: the toy's held-out set."),
    ] = None,
    caps: Annotated[str, typer.Option(help="Comma-separated caps; 'none' = no cap.")] = (
        DEFAULT_CAPS
    ),
    extensions: Annotated[str, typer.Option(help="Comma-separated extension counts.")] = (
        DEFAULT_EXTENSIONS
    ),
    out: Annotated[Path, typer.Option(help="Folder for results and the plot.")] = Path("out/sweep"),
    scorer: Annotated[str, typer.Option(help="'exact' or 'math' (math-verify).")] = "exact",
    limit: Annotated[int | None, typer.Option(help="Use only the first N questions.")] = None,
    model: ModelOption = None,
    engine_arg: EngineArg = None,
) -> None:
    """Accuracy against thinking tokens at several caps and extension counts, with a plot."""
    from s1_integrations.scaling import DatasetError

    try:
        with _generator(model, engine_arg) as generator:
            report = _sweep(generator, dataset, caps, extensions, out, scorer, limit)
    except (DatasetError, ValueError) as e:
        console.print(f"[red]error:[/red] {e}")
        console.print(f"nothing was written to {out}")
        raise typer.Exit(code=2) from None
    _print_summary(report)


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def serve(
    ctx: typer.Context,
    model: ModelOption = None,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    dry_run: Annotated[bool, typer.Option(help="Print the command instead of running it.")] = (
        False
    ),
) -> None:
    """Run vLLM's own OpenAI-compatible server with budget forcing on (extra args go to vLLM)."""
    import os
    import shlex

    from s1_integrations.engine.server import server_argv
    from s1_integrations.toy import toy_model_path

    extra = list(ctx.args)
    if model is None:
        model = str(toy_model_path())
        if "--dtype" not in extra:
            extra += ["--dtype", "float32"]  # the toy was trained in float32
    argv = server_argv(model, host=host, port=port, extra=extra)
    if dry_run:
        console.print(shlex.join(argv), soft_wrap=True)
        return
    os.execv(argv[0], argv)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
