"""``s1-integrations``: ask a reasoning model, or watch budget forcing on the toy reasoner."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.panel import Panel
from rich.table import Table

from s1_integrations.core.budget import ThinkingBudget

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)
console = Console()

#: Set to 1 (or pass --verbose) to see vLLM's and transformers' own log lines.
VERBOSE_ENV = "S1_VERBOSE"


@app.callback()
def _quiet_engines(
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help=f"Show vLLM's log lines (or {VERBOSE_ENV}=1).")
    ] = False,
) -> None:
    """Keep vLLM's start-up logging out of the output unless asked for.

    vLLM reads its level when it is first imported, in this process and in the engine
    processes it spawns (they inherit the environment), so it is set here, before any import.
    A level the user set explicitly is kept. What still reaches stderr from the engine's
    processes (warnings printed before vLLM configures its logging, C++ warnings, load bars)
    goes to a log file while the engine runs; see :func:`_engine_output`.
    """
    global _QUIET
    if verbose or os.environ.get(VERBOSE_ENV, "") not in ("", "0"):
        _QUIET = False
        return
    _QUIET = True
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


_QUIET = True
#: Where the engine's stderr goes in quiet mode; named on the terminal only if a command fails.
ENGINE_LOG = Path(tempfile.gettempdir()) / "s1-integrations-engine.log"


@contextlib.contextmanager
def _engine_output() -> Iterator[None]:
    """Send stderr (this process's and, inherited, the engine processes') to ENGINE_LOG.

    The CLI's own output is on stdout, so it stays; a failure restores stderr first, so the
    traceback is shown, and names the log.
    """
    if not _QUIET:
        yield
        return
    saved = os.dup(2)
    with ENGINE_LOG.open("ab") as log:
        os.dup2(log.fileno(), 2)
    try:
        yield
    except BaseException:
        os.dup2(saved, 2)
        console.print(f"[dim]the engine's own output is in {ENGINE_LOG}[/dim]")
        raise
    finally:
        os.dup2(saved, 2)
        os.close(saved)


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


@contextlib.contextmanager
def _generator(
    model: str | None, engine_args: list[str] | None, servers: list[str] | None = None
) -> Iterator[Any]:
    """The generator a command runs on, closed at the end, the engine's output kept quiet."""
    if servers and engine_args:
        raise typer.BadParameter("engine arguments belong to the servers", param_hint="-e")
    with _engine_output():
        from s1_integrations.core.generator import BudgetForcedGenerator  # imports vLLM

        if servers:
            with console.status("connecting to the vLLM servers..."):
                generator = BudgetForcedGenerator.from_servers(servers, model=model)
        else:
            args = _engine_args(engine_args)
            if _QUIET:
                args.setdefault("use_tqdm_on_load", False)
            with console.status("starting the vLLM engine..."):
                generator = BudgetForcedGenerator(model, **args)
        with generator:
            yield generator


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
    ("cap 0", ThinkingBudget(max_thinking_tokens=0)),
    ("cap 4", ThinkingBudget(max_thinking_tokens=4)),
    ("natural", ThinkingBudget()),
    ("1 extension", ThinkingBudget(extensions=1)),
    ("2 extensions", ThinkingBudget(extensions=2)),
    ("4 extensions", ThinkingBudget(extensions=4)),
]
TOY_NAME = "toy reasoner"


def _model_label(generator: Any, model: str | None) -> str:
    if model is None:
        return TOY_NAME
    return Path(generator.model_name).name or generator.model_name


def _s1_example(generator: Any) -> tuple[str, str] | None:
    """A hard held-out question the toy gets wrong thinking naturally and right when extended.

    Both budgets run over every hard question in one batch each; the first question where the
    extension turns a wrong answer right is the one the demo shows.
    """
    from s1_integrations.scaling import exact_match, load_jsonl
    from s1_integrations.toy import heldout_path

    hard = [qa for qa in load_jsonl(heldout_path()) if qa.difficulty == "hard"]
    questions = [qa.question for qa in hard]
    natural = generator.generate(questions, ThinkingBudget(max_answer_tokens=32))
    extended = generator.generate(questions, ThinkingBudget(extensions=1, max_answer_tokens=32))
    for qa, n, e in zip(hard, natural, extended, strict=True):
        if not exact_match(n.answer, qa.answer) and exact_match(e.answer, qa.answer):
            return qa.question, qa.answer
    return None


@app.command()
def demo(
    question: Annotated[
        str | None,
        typer.Option(help="Question to ask at every budget (default: a hard held-out one)."),
    ] = None,
    model: ModelOption = None,
    engine_arg: EngineArg = None,
    with_sweep: Annotated[
        bool, typer.Option("--sweep/--no-sweep", help="Then run the scaling sweep.")
    ] = True,
    sweep_out: Annotated[Path, typer.Option(help="Folder for the sweep's results.")] = Path(
        "out/sweep"
    ),
) -> None:
    """One question at several budgets, then the accuracy-vs-thinking sweep."""
    from s1_integrations.core.adaptive import DEFAULT_THRESHOLD
    from s1_integrations.scaling import exact_match

    plan = _plan_sweep(samples=DEMO_SAMPLES, thresholds=[DEFAULT_THRESHOLD]) if with_sweep else None
    with _generator(model, engine_arg) as generator:
        label = _model_label(generator, model)
        reference = None
        if question is None:
            found = _s1_example(generator) if model is None else None
            question, reference = found or ("What is 4857 + 2968?", "7825")
        budgets = [b for _, b in DEMO_BUDGETS]
        results = generator.generate([question] * len(budgets), budgets)
        title = f"{question}  ({label})"
        if reference is not None:
            title += f"\nreference answer: {reference}"
        table = Table(title=title)
        table.add_column("budget", no_wrap=True)
        for column in ("thinking", "Waits", "ended by"):
            table.add_column(column, justify="right")
        table.add_column("answer", no_wrap=True)
        if reference is not None:
            table.add_column("")
        for (name, _), r in zip(DEMO_BUDGETS, results, strict=True):
            answer = r.answer.strip()
            cells = [name, str(r.thinking_tokens), str(r.extensions), str(r.thinking_ended_by)]
            cells.append(answer)
            if reference is not None:
                right = exact_match(answer, reference)
                cells.append("[green]right[/green]" if right else "[red]wrong[/red]")
            table.add_row(*cells)
        console.print(table)
        console.print("thinking = thinking tokens, counted from token ids; Waits = extensions\n")
        for index in (2, 3):
            name, r = DEMO_BUDGETS[index][0], results[index]
            console.print(Panel(r.thinking.strip() or "(none)", title=f"thinking, {name}"))
        if plan is not None:
            console.print(
                f"\nsweeping caps, extensions, the adaptive policy and samples over the\n"
                f"{TOY_NAME}'s held-out set"
            )
            report = _sweep(generator, plan, sweep_out)
    if plan is not None:
        _print_summary(report)


def _parse_caps(text: str) -> list[int | None]:
    """Comma-separated caps: whole numbers, or 'none' for no cap (refused as ``--caps``)."""
    none = ("none", "inf", "unlimited")
    parts = [p.strip().lower() for p in text.split(",") if p.strip()]
    try:
        return [None if p in none else int(p) for p in parts]
    except ValueError:
        _refuse("--caps", f"{text!r} is not a list of integers and 'none'")


def _parse_ints(option: str, text: str) -> list[int]:
    try:
        return [int(p) for p in text.split(",") if p.strip()]
    except ValueError:
        _refuse(option, f"{text!r} is not a list of integers")


def _refuse(option: str, why: str) -> NoReturn:
    """A bad option: say which and why, before any engine starts."""
    console.print(f"[red]error:[/red] {option}: {why}")
    raise typer.Exit(code=2)


def _thresholds(option: str, text: str | None, default: float) -> list[float]:
    """A comma-separated list of numbers from 0 to 1 (``default`` alone when not given)."""
    try:
        levels = [float(t) for t in text.split(",") if t.strip()] if text else []
    except ValueError:
        _refuse(option, f"{text!r} is not a list of numbers")
    for level in levels:  # NaN fails the comparison too
        if not 0.0 <= level <= 1.0:
            _refuse(option, f"{level:g} is not between 0 and 1")
    return levels or [default]


def _print_summary(report: Any) -> None:
    labels = sorted({k for s in report.summaries for k in s.by_difficulty})
    table = Table(title="accuracy against thinking")
    # In 80 columns a long setting ("adaptive 0.45 exit 16") wraps at its spaces; the
    # figures and their headers never shrink.
    table.add_column("setting")
    for column in ("accuracy", *labels, "thinking", "p90", "Waits", "capped"):
        table.add_column(column, justify="right", no_wrap=True, min_width=len(column))
    for s in report.summaries:
        table.add_row(
            s.setting,
            f"{s.accuracy:.1%}",
            *(f"{s.by_difficulty[k][0]:.0%}" if k in s.by_difficulty else "" for k in labels),
            f"{s.mean_thinking_tokens:.1f}",
            f"{s.p90_thinking_tokens:.0f}",
            f"{s.mean_extensions:.1f}",
            f"{s.ended_by_cap:.0%}",
        )
    console.print(table)
    console.print("thinking: mean thinking tokens; Waits: extensions; capped: ended by the cap")
    for name, path in report.files.items():
        console.print(f"{name}: {path}")


DEFAULT_CAPS = "0,2,4,6,8,10,12,16"
DEFAULT_EXTENSIONS = "0,1,2,4,6,8"
#: The demo's parallel-scaling rows (the sweep command adds them only when asked).
DEMO_SAMPLES = "1,2,4,8"


#: The sweep option that gives each kind of setting (the one a bad value is refused as).
_SETTING_OPTIONS = {
    "cap": "--caps",
    "extend": "--extensions",
    "samples": "--samples",
    "adaptive": "--thresholds",
}


@dataclass(frozen=True)
class _SweepPlan:
    """A sweep's questions, settings and scorer, each checked before any engine starts."""

    pairs: list[Any]
    settings: list[Any]
    scorer: Any
    #: The --samples rows' temperature and seed where given (run_sweep's defaults otherwise).
    sampling: dict[str, Any]


def _plan_sweep(
    dataset: str | None = None,
    caps: str = DEFAULT_CAPS,
    extensions: str = DEFAULT_EXTENSIONS,
    scorer: str = "exact",
    limit: int | None = None,
    samples: str = "",
    temperature: float | None = None,
    seed: int | None = None,
    thresholds: list[float] | None = None,
    exits: list[int] | None = None,
    exit_thresholds: list[float] | None = None,
) -> _SweepPlan:
    """Everything the sweep needs that can be wrong, refused by option: an engine takes a
    minute to start, and a sweep that fails after it has run for an hour wastes that."""
    from pydantic import ValidationError

    from s1_integrations.scaling import DatasetError, get_scorer, load_jsonl
    from s1_integrations.scaling.sweep import MAX_ANSWER_TOKENS, check_setting, settings_for
    from s1_integrations.toy import heldout_path

    try:
        pairs = load_jsonl(dataset or heldout_path())
    except DatasetError as e:
        _refuse("--dataset", str(e))
    try:
        score = get_scorer(scorer)
    except ValueError as e:
        _refuse("--scorer", str(e).removeprefix("scorer: "))
    settings = settings_for(
        _parse_caps(caps),
        _parse_ints("--extensions", extensions),
        _parse_ints("--samples", samples),
        thresholds or (),
        exits or (0,),
        exit_thresholds or (),  # the default threshold
    )
    for setting in settings:
        try:
            check_setting(setting, MAX_ANSWER_TOKENS)
        except ValueError as e:  # a ValidationError is one too
            why = e.errors()[0]["msg"] if isinstance(e, ValidationError) else str(e)
            _refuse(_SETTING_OPTIONS[setting.kind], f"{setting.value}: {why}")
    sampling = {"temperature": temperature, "seed": seed}
    given = {name: value for name, value in sampling.items() if value is not None}
    return _SweepPlan(pairs[:limit], settings, score, given)


def _sweep(generator: Any, plan: _SweepPlan, out: Path) -> Any:
    from s1_integrations.scaling import run_sweep

    questions, settings = len(plan.pairs), len(plan.settings)
    with console.status(f"{settings} budget settings x {questions} questions..."):
        return run_sweep(
            generator,
            plan.pairs,
            plan.settings,
            out,
            scorer=plan.scorer,
            progress=not _QUIET,
            **plan.sampling,
        )


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
    limit: Annotated[
        int | None, typer.Option(min=1, help="Use only the first N questions.")
    ] = None,
    samples: Annotated[
        str,
        typer.Option(help="Comma-separated sample counts: majority-vote rows (parallel scaling)."),
    ] = "",
    temperature: Annotated[
        float | None,
        typer.Option(min=0.0, help="Sampling temperature of the --samples rows (default 0.7)."),
    ] = None,
    seed: Annotated[
        int | None, typer.Option(help="Seed of the --samples rows (default 0).")
    ] = None,
    adaptive: Annotated[
        bool,
        typer.Option(
            "--adaptive/--no-adaptive",
            help="Also run the adaptive policy (rows of kind 'adaptive'), once per threshold.",
        ),
    ] = False,
    thresholds: Annotated[
        str | None,
        typer.Option(help="Comma-separated adaptive thresholds (0-1); default: the default."),
    ] = None,
    exit_after: Annotated[
        str | None,
        typer.Option(
            "--exit-after",
            help=(
                "Comma-separated early-exit stretches (confident tokens; 0: no early exit) "
                "for the adaptive rows, each with every threshold; default: 0."
            ),
        ),
    ] = None,
    exit_thresholds: Annotated[
        str | None,
        typer.Option(
            "--exit-thresholds",
            help=(
                "Comma-separated early-exit thresholds (0-1: the top-1 a confident token "
                "needs), each with every --exit-after stretch; default: the default."
            ),
        ),
    ] = None,
    model: ModelOption = None,
    engine_arg: EngineArg = None,
) -> None:
    """Accuracy against thinking tokens at several caps, extension counts, sample counts and
    adaptive thresholds, with a plot."""
    from s1_integrations.core.adaptive import DEFAULT_EXIT_THRESHOLD, DEFAULT_THRESHOLD

    options = (
        ("--thresholds", thresholds),
        ("--exit-after", exit_after),
        ("--exit-thresholds", exit_thresholds),
    )
    for name, value in options:
        if value is not None and not adaptive:
            _refuse(name, "set for the adaptive policy; add --adaptive")
    for name, given in (("--temperature", temperature), ("--seed", seed)):
        if given is not None and not samples.strip():  # the other rows decode greedily
            _refuse(name, "set for the --samples rows; add --samples")
    exits = _parse_ints("--exit-after", exit_after) if exit_after else [0]
    if any(e < 0 for e in exits):
        _refuse("--exit-after", f"{min(exits)} is below 0")
    if exit_thresholds is not None and not any(exits):
        _refuse("--exit-thresholds", "set for the early exit; add --exit-after N (N > 0)")
    levels = _thresholds("--thresholds", thresholds, DEFAULT_THRESHOLD) if adaptive else []
    exit_levels = _thresholds("--exit-thresholds", exit_thresholds, DEFAULT_EXIT_THRESHOLD)
    plan = _plan_sweep(
        dataset,
        caps,
        extensions,
        scorer,
        limit,
        samples,
        temperature,
        seed,
        levels,
        exits,
        exit_levels,
    )
    try:
        with _generator(model, engine_arg) as generator:
            report = _sweep(generator, plan, out)
    except ValueError as e:  # what only the engine can say (its max_num_seqs)
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
    effort_table: Annotated[
        Path | None,
        typer.Option(
            help="JSON file of reasoning_effort levels to budget fields, replacing the defaults' "
            "entries it names (sets S1_EFFORT_TABLE for the server).",
            exists=True,
            dir_okay=False,
        ),
    ] = None,
    dry_run: Annotated[bool, typer.Option(help="Print the command instead of running it.")] = (
        False
    ),
) -> None:
    """Run vLLM's own OpenAI-compatible server with budget forcing on (extra args go to vLLM).

    Any OpenAI client can then send budgets in plain words in ``vllm_xargs``
    (``max_thinking_tokens``, ``extensions``, ``reasoning_effort``, ...) and gets the
    thinking in the reasoning field: the reasoning parser of the model's thinking format, a
    chat template that opens the thinking block and, on the CPU, a KV cache size that fits and
    whole-prompt prefill are added unless given (docs/scaling-out.md).
    """
    import shlex

    from s1_integrations.engine.server import exec_server, serve_defaults, server_argv
    from s1_integrations.engine.xargs import EFFORT_TABLE_ENV, load_effort_table
    from s1_integrations.toy import toy_model_path

    extra = list(ctx.args)
    if model is None:
        model = str(toy_model_path())
        if "--dtype" not in extra:
            extra += ["--dtype", "float32"]  # the toy was trained in float32
    env: dict[str, str] = {}
    if effort_table is not None:
        env[EFFORT_TABLE_ENV] = str(effort_table.resolve())
    try:
        load_effort_table(env.get(EFFORT_TABLE_ENV))  # a bad table fails here, not per request
        extra += serve_defaults(model, extra)
    except ValueError as e:
        console.print(f"[red]error:[/red] {e}")
        raise typer.Exit(code=2) from None
    argv = server_argv(model, host=host, port=port, extra=extra)
    if dry_run:
        assignments = [f"{k}={shlex.quote(v)}" for k, v in env.items()]
        console.print(" ".join([*assignments, shlex.join(argv)]), soft_wrap=True)
        return
    os.environ.update(env)
    exec_server(argv)  # a guardian ends the engine processes if the server is killed


def main() -> None:
    app()


if __name__ == "__main__":
    main()
