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


def _generator(model: str | None, engine_args: list[str] | None) -> Any:
    from s1_integrations.core.generator import BudgetForcedGenerator

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
) -> None:
    """Answer one question, printing the thinking and the answer apart."""
    budget = ThinkingBudget(
        max_thinking_tokens=max_thinking, min_thinking_tokens=min_thinking, extensions=extensions
    )
    with _generator(model, engine_arg) as generator:
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
) -> None:
    """The same question at several budgets: budget forcing on the shipped toy reasoner."""
    with _generator(model, engine_arg) as generator:
        budgets = [b for _, b in DEMO_BUDGETS]
        results = generator.generate([question] * len(budgets), budgets)
        table = Table(title=f"{question}  (model: {Path(generator.model_name).name})")
        for column in ("budget", "thinking tokens", "extensions", "ended by", "answer"):
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


def main() -> None:
    app()


if __name__ == "__main__":
    main()
