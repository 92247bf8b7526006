"""Budget forcing on the shipped toy reasoner: cap, extend, stream.

python examples/quickstart.py
"""

from s1_integrations import BudgetForcedGenerator, ThinkingBudget


def main() -> None:
    with BudgetForcedGenerator(dtype="float32") as gen:
        question = "What is 4857 + 2968?"
        for budget in (
            ThinkingBudget(),
            ThinkingBudget(max_thinking_tokens=10),
            ThinkingBudget(extensions=1),
        ):
            (r,) = gen.generate(question, budget)
            print(
                f"{budget.max_thinking_tokens=} {budget.extensions=}: "
                f"{r.thinking_tokens} thinking tokens, ended by {r.thinking_ended_by}, "
                f"{r.extensions} extensions -> {r.answer.strip()!r}"
            )
        print("\nstreaming with one extension:")
        for event in gen.stream(question, ThinkingBudget(extensions=1)):
            if event.type == "thinking":
                print(event.text, end="", flush=True)
            elif event.type == "extension":
                print(f"[+{event.phrase}]", end="", flush=True)
            elif event.type == "answer":
                print(event.text, end="", flush=True)
        print()


if __name__ == "__main__":  # vLLM starts worker processes with spawn
    main()
