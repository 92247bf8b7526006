"""The budget-forcing state machine, at the level of token ids.

One class, :class:`ForcingState`, is the single source of truth for what budget forcing does.
The in-engine logits processor drives it one sampled token at a time; the rounds strategy
drives it between engine calls; and results are built by replaying it over the token ids the
engine produced. Because all three share it, the strategies cannot drift apart.
"""

from __future__ import annotations

import json
from collections import deque
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

#: Key of the per-request settings in ``SamplingParams.extra_args`` (``vllm_xargs`` over HTTP).
EXTRA_ARGS_KEY = "s1_budget"


class ForcingMismatch(RuntimeError):
    """A token disagreed with a forced sequence: something else rewrote the logits."""


class Phase(Enum):
    THINKING = "thinking"
    ANSWERING = "answering"
    FINISHED = "finished"


class _Kind(Enum):
    THINKING = "thinking"  # a forced token that counts as thinking (phrase, conclusion)
    END = "end"  # a token of the end delimiter
    EOS = "eos"  # the end of sequence forced at the answer cap


@dataclass(frozen=True)
class ForcingPlan:
    """A budget resolved to token ids for one model: what the processor needs per request."""

    end: tuple[int, ...]
    eos: tuple[int, ...]
    min_thinking: int = 0
    max_thinking: int | None = None
    extensions: int = 0
    phrases: tuple[tuple[int, ...], ...] = ()
    conclusion: tuple[int, ...] = ()
    max_answer: int | None = None

    def __post_init__(self) -> None:
        if not self.end:
            raise ValueError("end delimiter must have at least one token")
        if not self.eos:
            raise ValueError("at least one end-of-sequence token is required")
        if any(not p for p in self.phrases):
            raise ValueError("extension phrases must have at least one token")
        if (self.min_thinking or self.extensions) and not self.phrases:
            raise ValueError("extensions need at least one extension phrase")
        if self.min_thinking < 0 or self.extensions < 0:
            raise ValueError("min_thinking and extensions must be >= 0")
        if self.max_thinking is not None:
            if self.max_thinking < len(self.conclusion):
                raise ValueError("max_thinking cannot fit the conclusion")
            if self.min_thinking > self.max_thinking:
                raise ValueError("min_thinking exceeds max_thinking")
        if self.max_answer is not None and self.max_answer < 1:
            raise ValueError("max_answer must be >= 1")

    @property
    def needs_extensions(self) -> bool:
        return self.min_thinking > 0 or self.extensions > 0

    @property
    def end_attempt_ids(self) -> tuple[int, ...]:
        """Tokens whose sampling is an attempt to stop thinking, as one step can see it.

        A multi-token end delimiter is only recognisable once complete, so one pass can only
        treat end of sequence as an attempt; extensions on such models run in rounds.
        """
        return (self.end[0], *self.eos) if len(self.end) == 1 else self.eos

    def to_extra_args(self) -> dict[str, Any]:
        return {
            "end": list(self.end),
            "eos": list(self.eos),
            "min_thinking": self.min_thinking,
            "max_thinking": self.max_thinking,
            "extensions": self.extensions,
            "phrases": [list(p) for p in self.phrases],
            "conclusion": list(self.conclusion),
            "max_answer": self.max_answer,
        }

    def to_json(self) -> str:
        """The settings as one string, the shape ``vllm_xargs`` can carry to a server."""
        return json.dumps(self.to_extra_args(), separators=(",", ":"))

    @classmethod
    def from_extra_args(cls, args: dict[str, Any]) -> ForcingPlan:
        """Parse settings sent through ``extra_args``; raises ``ValueError`` naming the field.

        Over HTTP, ``vllm_xargs`` admits only scalars and flat lists, so the settings may also
        arrive as one JSON string (what :meth:`to_json` writes).
        """
        if isinstance(args, str):
            try:
                args = json.loads(args)
            except json.JSONDecodeError as e:
                raise ValueError(f"{EXTRA_ARGS_KEY} is not valid JSON: {e}") from None
        if not isinstance(args, dict):
            raise ValueError(f"{EXTRA_ARGS_KEY} must be a dict, got {type(args).__name__}")
        unknown = set(args) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"{EXTRA_ARGS_KEY}: unknown settings {sorted(unknown)}")

        def ids(name: str, value: Any) -> tuple[int, ...]:
            if not isinstance(value, (list, tuple)) or not all(
                isinstance(t, int) and not isinstance(t, bool) and t >= 0 for t in value
            ):
                raise ValueError(f"{EXTRA_ARGS_KEY}.{name} must be a list of token ids")
            return tuple(value)

        def count(name: str, value: Any, optional: bool = False) -> int | None:
            if value is None and optional:
                return None
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"{EXTRA_ARGS_KEY}.{name} must be an integer >= 0")
            return value

        try:
            phrases = args.get("phrases", [])
            if not isinstance(phrases, (list, tuple)):
                raise ValueError(f"{EXTRA_ARGS_KEY}.phrases must be a list of token-id lists")
            return cls(
                end=ids("end", args.get("end")),
                eos=ids("eos", args.get("eos")),
                min_thinking=count("min_thinking", args.get("min_thinking", 0)) or 0,
                max_thinking=count("max_thinking", args.get("max_thinking"), optional=True),
                extensions=count("extensions", args.get("extensions", 0)) or 0,
                phrases=tuple(ids("phrases", p) for p in phrases),
                conclusion=ids("conclusion", args.get("conclusion", [])),
                max_answer=count("max_answer", args.get("max_answer"), optional=True),
            )
        except ValueError as e:
            if str(e).startswith(EXTRA_ARGS_KEY):
                raise
            raise ValueError(f"{EXTRA_ARGS_KEY}: {e}") from e


@dataclass
class ForcingState:
    """Where one request stands: thinking, forcing a sequence, or answering.

    Drive it with :meth:`pending` (a token that must come next, if any), :meth:`end_attempt`
    (the model tried to stop thinking: returns the first token of what replaces the attempt)
    and :meth:`observe` (a token was produced).
    """

    plan: ForcingPlan
    phase: Phase = Phase.THINKING
    thinking_tokens: int = 0
    answer_tokens: int = 0
    position: int = 0
    inserted: int = 0
    ended_by: str | None = None
    extension_positions: list[int] = field(default_factory=list)
    thinking_end: int | None = None  # output index where the end delimiter starts
    answer_start: int | None = None  # output index of the first answer token
    answer_capped: bool = False
    _queue: deque[tuple[int, _Kind]] = field(default_factory=deque)
    _tail: deque[int] = field(default_factory=deque)

    @property
    def forcing(self) -> bool:
        return bool(self._queue)

    def extension_due(self) -> tuple[int, ...] | None:
        """The phrase to insert if the model tried to stop now, or ``None`` to let it stop."""
        plan = self.plan
        if self.inserted >= plan.extensions and self.thinking_tokens >= plan.min_thinking:
            return None
        phrase = plan.phrases[self.inserted % len(plan.phrases)]
        if (
            plan.max_thinking is not None
            and self.thinking_tokens + len(phrase) + len(plan.conclusion) > plan.max_thinking
        ):
            return None  # the phrase no longer fits under the cap: the model may stop
        return phrase

    def pending(self) -> int | None:
        """The token that must be produced next, starting the cap's forcing when it is due."""
        if not self._queue:
            plan = self.plan
            if (
                self.phase is Phase.THINKING
                and plan.max_thinking is not None
                and self.thinking_tokens >= plan.max_thinking - len(plan.conclusion)
            ):
                self.ended_by = "budget"
                self._enqueue(plan.conclusion, _Kind.THINKING)
                self._enqueue(plan.end, _Kind.END)
            elif (
                self.phase is Phase.ANSWERING
                and plan.max_answer is not None
                and self.answer_tokens >= plan.max_answer
            ):
                self._enqueue(plan.eos[:1], _Kind.EOS)
        return self._queue[0][0] if self._queue else None

    def replacement(self) -> int:
        """What :meth:`end_attempt` would return now, without recording an attempt.

        Lets the processor prepare the replacement before it knows whether the model tries
        to stop (on a GPU that is decided on the device, and read back a step later).
        """
        phrase = self.extension_due()
        return phrase[0] if phrase is not None else self.plan.end[0]

    def end_attempt(self) -> int:
        """The model tried to end its thinking: extend it, or close the block properly."""
        assert self.phase is Phase.THINKING and not self._queue
        phrase = self.extension_due()
        if phrase is not None:
            self.extension_positions.append(self.position)
            self.inserted += 1
            self._enqueue(phrase, _Kind.THINKING)
        else:
            self.ended_by = "model"
            self._enqueue(self.plan.end, _Kind.END)
        return self._queue[0][0]

    def observe(self, token: int) -> None:
        if self._queue:
            expected, kind = self._queue.popleft()
            if token != expected:
                raise ForcingMismatch(
                    f"expected forced token {expected} at output position {self.position}, "
                    f"got {token}"
                )
            if kind is _Kind.THINKING:
                self.thinking_tokens += 1
                self._tail.clear()
            elif kind is _Kind.END:
                if self.thinking_end is None:
                    self.thinking_end = self.position
                if not self._queue:
                    self._start_answer()
            else:
                self.answer_capped = True
                self.phase = Phase.FINISHED
        elif self.phase is Phase.THINKING:
            self._observe_thinking(token)
        elif self.phase is Phase.ANSWERING:
            if token in self.plan.eos:
                self.phase = Phase.FINISHED
            else:
                self.answer_tokens += 1
        self.position += 1

    def _observe_thinking(self, token: int) -> None:
        end = self.plan.end
        self.thinking_tokens += 1
        self._tail.append(token)
        if len(self._tail) > len(end):
            self._tail.popleft()
        if len(self._tail) == len(end) and tuple(self._tail) == end:
            # The model closed the block itself; its delimiter tokens are not thinking.
            self.thinking_tokens -= len(end)
            self.thinking_end = self.position - len(end) + 1
            self.ended_by = "model"
            self._start_answer()
        elif token in self.plan.eos:
            # Only reachable when nothing forced this request (e.g. replaying a bare output).
            self.thinking_tokens -= 1
            self.phase = Phase.FINISHED

    def _start_answer(self) -> None:
        self.phase = Phase.ANSWERING
        self.answer_start = self.position + 1
        self._tail.clear()

    def _enqueue(self, ids: tuple[int, ...], kind: _Kind) -> None:
        self._queue.extend((t, kind) for t in ids)


class Replayer:
    """Replays :class:`ForcingState` over an engine's output as it grows.

    ``forced[i]`` says whether token ``i`` was forced (its processed log-probability was
    exactly 0: every alternative masked). A forced run where the model could have tried to
    stop is how an inserted phrase is told apart from the model writing the phrase itself.
    Tokens are classified only once the longest forced sequence could be seen whole.
    """

    def __init__(self, plan: ForcingPlan) -> None:
        self.state = ForcingState(plan)
        self.ids: list[int] = []
        self.forced: list[bool] = []
        self._lookahead = max(len(plan.end), *(len(p) for p in plan.phrases), 1)

    def feed(self, ids: list[int], forced: list[bool], final: bool = False) -> None:
        self.ids.extend(ids)
        self.forced.extend(forced)
        state = self.state
        limit = len(self.ids) if final else len(self.ids) - self._lookahead + 1
        while state.position < limit and state.phase is not Phase.FINISHED:
            i = state.position
            if (
                state.pending() is None
                and self.forced[i]
                and state.phase is Phase.THINKING
                and self._forced_run_follows(i)
            ):
                state.end_attempt()
            state.observe(self.ids[i])

    def _forced_run_follows(self, i: int) -> bool:
        phrase = self.state.extension_due()
        sequence = phrase if phrase is not None else self.state.plan.end
        n = len(sequence)
        return tuple(self.ids[i : i + n]) == sequence and all(self.forced[i : i + n])


def replay(plan: ForcingPlan, token_ids: list[int], forced: list[bool]) -> ForcingState:
    """Classify a whole output at once (see :class:`Replayer`)."""
    replayer = Replayer(plan)
    replayer.feed(token_ids, forced, final=True)
    return replayer.state
