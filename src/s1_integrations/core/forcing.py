"""The budget-forcing state machine, at the level of token ids.

One class, :class:`ForcingState`, is the single source of truth for what budget forcing does.
The in-engine logits processor drives it one sampled token at a time; the rounds strategy
drives it between engine calls; and results are built by replaying it over the token ids the
engine produced. Because all three share it, the strategies cannot drift apart.
"""

from __future__ import annotations

import json
import sys
from collections import deque
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from functools import cached_property, lru_cache
from itertools import islice
from typing import Any

from s1_integrations.core.adaptive import (
    DEFAULT_EXIT_THRESHOLD,
    SIGNALS,
    SignalTracker,
    Stretch,
    confident,
)

#: Key of the per-request settings in ``SamplingParams.extra_args`` (``vllm_xargs`` over HTTP).
EXTRA_ARGS_KEY = "s1_budget"


class ForcingMismatch(RuntimeError):
    """A token disagreed with the budget: something else rewrote the logits, or nothing forced.

    Raised when a token differs from a forced one, and when the model wrote a thinking
    delimiter that the budget suppresses: the engine that produced the output did not apply
    the budget, and the result would misstate what was counted.
    """


class Phase(Enum):
    THINKING = "thinking"
    ANSWERING = "answering"
    FINISHED = "finished"


class _Kind(Enum):
    THINKING = "thinking"  # a forced token that counts as thinking (phrase, conclusion)
    END = "end"  # a token of the end delimiter
    EOS = "eos"  # the end of sequence forced at the answer cap


# The members as module constants: on Python 3.11 reading ``Phase.THINKING`` goes through
# the enum's descriptor (about 90 ns, ten times a global), and the processor runs the state's
# methods for every row at every step, each reading several of them.
_THINKING, _ANSWERING, _FINISHED = Phase.THINKING, Phase.ANSWERING, Phase.FINISHED
_FORCED_THINKING, _FORCED_END, _FORCED_EOS = _Kind.THINKING, _Kind.END, _Kind.EOS


@dataclass(frozen=True)
class ForcingPlan:
    """A budget resolved to token ids for one model: what the processor needs per request.

    ``ban_thinking`` and ``ban_answer`` are token-id sequences the model may not write while
    thinking and once the thinking has ended (the start delimiter, and in the answer the end
    delimiter too): a sequence is suppressed by masking its last token where the model's own
    tokens since the last forced token end in the rest of it, exactly as vLLM's ``bad_words``
    treat a request's output, so the rounds strategy gets the same tokens from vLLM itself.

    ``adaptive_signal`` (with ``adaptive_threshold`` and ``adaptive_max``) is the adaptive
    policy (:mod:`s1_integrations.core.adaptive`): past the minimum, an attempt to stop is
    extended only while the signal says the model is unsure, instead of ``extensions`` times.
    ``exit_after`` (with ``exit_threshold``) is its early exit: once that many consecutive
    model tokens each had a top-1 probability of at least ``exit_threshold`` and the thinking
    has reached the minimum, the conclusion and the end delimiter are forced, as the cap
    forces them.

    ``landing`` is the soft-landing window: once the thinking is within ``landing`` tokens of
    the point where the cap forces its sequence, the first ``breaks`` token the model writes
    ends the thinking there. ``weak_breaks`` (bare sentence punctuation) break only when the
    token before is not in ``digits`` ("3.5" is no sentence end).
    """

    end: tuple[int, ...]
    eos: tuple[int, ...]
    min_thinking: int = 0
    max_thinking: int | None = None
    extensions: int = 0
    phrases: tuple[tuple[int, ...], ...] = ()
    conclusion: tuple[int, ...] = ()
    max_answer: int | None = None
    ban_thinking: tuple[tuple[int, ...], ...] = ()
    ban_answer: tuple[tuple[int, ...], ...] = ()
    landing: int = 0
    breaks: tuple[int, ...] = ()
    weak_breaks: tuple[int, ...] = ()
    digits: tuple[int, ...] = ()
    adaptive_signal: str | None = None
    adaptive_threshold: float = 0.0
    adaptive_max: int = 0
    exit_after: int = 0
    exit_threshold: float = DEFAULT_EXIT_THRESHOLD

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
        if any(not b for b in (*self.ban_thinking, *self.ban_answer)):
            raise ValueError("ban_thinking and ban_answer sequences must have at least one token")
        if self.landing < 0:
            raise ValueError("landing must be >= 0")
        if self.landing:
            if self.max_thinking is None:
                raise ValueError("landing needs max_thinking: it ends the thinking before a cap")
            if self.landing > self.max_thinking:
                raise ValueError("landing exceeds max_thinking")
            if not self.breaks and not self.weak_breaks:
                raise ValueError("landing needs break tokens (breaks or weak_breaks)")
        if self.adaptive_signal is not None:
            if self.adaptive_signal not in SIGNALS:
                raise ValueError(
                    f"adaptive_signal: unknown signal {self.adaptive_signal!r}; "
                    f"use one of {list(SIGNALS)}"
                )
            if not 0.0 <= self.adaptive_threshold <= 1.0:  # also refuses NaN
                raise ValueError("adaptive_threshold must be between 0 and 1")
            if self.adaptive_max < 0:
                raise ValueError("adaptive_max must be >= 0")
            if self.extensions:
                raise ValueError("extensions and an adaptive policy exclude each other")
            if self.adaptive_max and not self.phrases:
                raise ValueError("adaptive_max needs at least one extension phrase")
        if self.exit_after < 0:
            raise ValueError("exit_after must be >= 0")
        if not 0.0 <= self.exit_threshold <= 1.0:  # also refuses NaN
            raise ValueError("exit_threshold must be between 0 and 1")
        if self.exit_after and self.adaptive_signal is None:  # (which excludes extensions)
            raise ValueError("exit_after is the adaptive policy's: it needs adaptive_signal")

    @property
    def needs_extensions(self) -> bool:
        return self.min_thinking > 0 or self.extensions > 0 or self.adaptive_max > 0

    @property
    def needs_forced_flags(self) -> bool:
        """Whether forcing may happen where the token ids alone cannot say: an inserted
        phrase, or an early exit (caps and landings follow from the counts and the ids)."""
        return self.needs_extensions or self.early_exit

    @property
    def early_exit(self) -> bool:
        return self.exit_after > 0

    @property
    def measures_top1(self) -> bool:
        """Whether the plan reads each step's top-1 probability (the policy's signals)."""
        return self.adaptive or self.early_exit

    @property
    def adaptive(self) -> bool:
        """Whether the policy may extend (it then needs each step's top-1 probability)."""
        return self.adaptive_signal is not None and self.adaptive_max > 0

    @cached_property
    def end_attempt_ids(self) -> tuple[int, ...]:
        """Tokens whose sampling is an attempt to stop thinking, as one step can see it.

        A multi-token end delimiter is only recognisable once complete, so one pass can only
        treat end of sequence as an attempt; extensions on such models run in rounds.
        """
        return (self.end[0], *self.eos) if len(self.end) == 1 else self.eos

    @cached_property
    def landing_from(self) -> int | None:
        """Thinking tokens after which a break ends the thinking (``None``: no landing).

        The window is the last ``landing`` tokens before the cap's forced sequence, and never
        reaches below the minimum: a break lands when the count after it exceeds this.
        """
        if not self.landing or self.cap_from is None:
            return None
        return max(self.cap_from - self.landing, self.min_thinking - 1, 0)

    @cached_property
    def cap_from(self) -> int | None:
        """Thinking tokens at which the cap starts forcing the conclusion and the delimiter."""
        return None if self.max_thinking is None else self.max_thinking - len(self.conclusion)

    @cached_property
    def delimiter_sequences(self) -> tuple[tuple[int, ...], ...]:
        """Every sequence the state matches across tokens: the end and the suppressed ones."""
        return (self.end, *self.ban_thinking, *self.ban_answer)

    @cached_property
    def _thinking_bans(self) -> _Bans:
        """While thinking: single tokens always masked, and (prefix, last) pairs of longer ones."""
        return _split_bans(self.ban_thinking)

    @cached_property
    def _answer_bans(self) -> _Bans:
        return _split_bans(self.ban_answer)

    @cached_property
    def _banned_lasts(self) -> frozenset[int]:
        """Every token some ban could mask: a token outside it needs no check when observed."""
        return frozenset(s[-1] for s in (*self.ban_thinking, *self.ban_answer))

    @cached_property
    def quiet(self) -> bool:
        """Whether the model's ordinary thinking tokens only count
        (:meth:`ForcingState.count_quiet`, and :meth:`ForcingState.fold_top1` for the
        policy's signal): so it is without a soft landing (a break may end the thinking),
        the early exit (a stretch may end it), and a multi-token end delimiter or ban (they
        are matched across tokens). The answer's: :attr:`quiet_answer`."""
        return (
            len(self.end) == 1
            and not self.landing
            and not self.early_exit
            and self._ban_memory == 0
        )

    @cached_property
    def quiet_answer(self) -> bool:
        """Whether the model's ordinary answer tokens only count: the soft landing and the
        early exit concern the thinking alone, so only a multi-token ban rules it out."""
        return self._ban_memory == 0

    @cached_property
    def special(self) -> frozenset[int]:
        """The tokens a state must look at: the end delimiter, end of sequence and every token
        a ban could mask; any other token of the model's only counts where the plan allows
        it (:attr:`quiet` while thinking, :attr:`quiet_answer` in the answer)."""
        return frozenset((*self.end, *self.eos, *self._banned_lasts))

    @cached_property
    def _ban_memory(self) -> int:
        """How many of the model's recent tokens a multi-token ban needs to see."""
        return max((len(s) - 1 for s in (*self.ban_thinking, *self.ban_answer)), default=0)

    @cached_property
    def _break_sets(self) -> tuple[frozenset[int], frozenset[int], frozenset[int]]:
        return frozenset(self.breaks), frozenset(self.weak_breaks), frozenset(self.digits)

    def to_extra_args(self) -> dict[str, Any]:
        args: dict[str, Any] = {
            "end": list(self.end),
            "eos": list(self.eos),
            "min_thinking": self.min_thinking,
            "max_thinking": self.max_thinking,
            "extensions": self.extensions,
            "phrases": [list(p) for p in self.phrases],
            "conclusion": list(self.conclusion),
            "max_answer": self.max_answer,
        }
        # The newer settings travel only when set, so a plan without them is what older
        # servers already accept (they refuse unknown settings rather than ignore them).
        if self.ban_thinking:
            args["ban_thinking"] = [list(b) for b in self.ban_thinking]
        if self.ban_answer:
            args["ban_answer"] = [list(b) for b in self.ban_answer]
        if self.landing:
            args["landing"] = self.landing
            args["breaks"] = list(self.breaks)
            args["weak_breaks"] = list(self.weak_breaks)
            args["digits"] = list(self.digits)
        if self.adaptive_signal is not None:
            args["adaptive_signal"] = self.adaptive_signal
            args["adaptive_threshold"] = self.adaptive_threshold
            args["adaptive_max"] = self.adaptive_max
        if self.exit_after:
            args["exit_after"] = self.exit_after
            args["exit_threshold"] = self.exit_threshold
        return args

    def to_json(self) -> str:
        """The settings as one string, the shape ``vllm_xargs`` can carry to a server."""
        return _plan_json(self)

    @classmethod
    def from_extra_args(cls, args: dict[str, Any] | str) -> ForcingPlan:
        """Parse settings sent through ``extra_args``; raises ``ValueError`` naming the field.

        Over HTTP, ``vllm_xargs`` admits only scalars and flat lists, so the settings may also
        arrive as one JSON string (what :meth:`to_json` writes). Strings are parsed once and
        remembered: a server sees the same few budgets over and over, and a soft-landing plan
        carries the tokenizer's break tokens.
        """
        if isinstance(args, str):
            return _plan_from_json(args)
        return cls._parse(args)

    @classmethod
    def _parse(cls, args: Any) -> ForcingPlan:
        if not isinstance(args, dict):
            raise ValueError(f"{EXTRA_ARGS_KEY} must be a dict, got {type(args).__name__}")
        unknown = set(args) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"{EXTRA_ARGS_KEY}: unknown settings {sorted(unknown)}")

        def ids(name: str, value: Any) -> tuple[int, ...]:
            if not isinstance(value, (list, tuple)) or not all(
                type(t) is int and t >= 0 for t in value
            ):
                raise ValueError(f"{EXTRA_ARGS_KEY}.{name} must be a list of token ids")
            return tuple(value)

        def seqs(name: str, value: Any) -> tuple[tuple[int, ...], ...]:
            if not isinstance(value, (list, tuple)):
                raise ValueError(f"{EXTRA_ARGS_KEY}.{name} must be a list of token-id lists")
            return tuple(ids(name, v) for v in value)

        def count(name: str, value: Any, optional: bool = False) -> int | None:
            if value is None and optional:
                return None
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"{EXTRA_ARGS_KEY}.{name} must be an integer >= 0")
            return value

        def signal(value: Any) -> str | None:
            if value is not None and not isinstance(value, str):
                raise ValueError(f"{EXTRA_ARGS_KEY}.adaptive_signal must be a signal name")
            return value

        def threshold(name: str, value: Any) -> float:
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                raise ValueError(f"{EXTRA_ARGS_KEY}.{name} must be a number")
            return float(value)

        try:
            return cls(
                end=ids("end", args.get("end")),
                eos=ids("eos", args.get("eos")),
                min_thinking=count("min_thinking", args.get("min_thinking", 0)) or 0,
                max_thinking=count("max_thinking", args.get("max_thinking"), optional=True),
                extensions=count("extensions", args.get("extensions", 0)) or 0,
                phrases=seqs("phrases", args.get("phrases", [])),
                conclusion=ids("conclusion", args.get("conclusion", [])),
                max_answer=count("max_answer", args.get("max_answer"), optional=True),
                ban_thinking=seqs("ban_thinking", args.get("ban_thinking", [])),
                ban_answer=seqs("ban_answer", args.get("ban_answer", [])),
                landing=count("landing", args.get("landing", 0)) or 0,
                breaks=ids("breaks", args.get("breaks", [])),
                weak_breaks=ids("weak_breaks", args.get("weak_breaks", [])),
                digits=ids("digits", args.get("digits", [])),
                adaptive_signal=signal(args.get("adaptive_signal")),
                adaptive_threshold=threshold(
                    "adaptive_threshold", args.get("adaptive_threshold", 0.0)
                ),
                adaptive_max=count("adaptive_max", args.get("adaptive_max", 0)) or 0,
                exit_after=count("exit_after", args.get("exit_after", 0)) or 0,
                exit_threshold=threshold(
                    "exit_threshold", args.get("exit_threshold", DEFAULT_EXIT_THRESHOLD)
                ),
            )
        except ValueError as e:
            if str(e).startswith(EXTRA_ARGS_KEY):
                raise
            raise ValueError(f"{EXTRA_ARGS_KEY}: {e}") from e


_Bans = tuple[tuple[int, ...], tuple[tuple[tuple[int, ...], int], ...]]


def _split_bans(seqs: tuple[tuple[int, ...], ...]) -> _Bans:
    singles = tuple(dict.fromkeys(s[0] for s in seqs if len(s) == 1))
    multis = tuple(dict.fromkeys((s[:-1], s[-1]) for s in seqs if len(s) > 1))
    return singles, multis


@lru_cache(maxsize=256)
def _plan_json(plan: ForcingPlan) -> str:
    return json.dumps(plan.to_extra_args(), separators=(",", ":"))


@lru_cache(maxsize=256)
def _plan_from_json(text: str) -> ForcingPlan:
    try:
        args = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"{EXTRA_ARGS_KEY} is not valid JSON: {e}") from None
    return ForcingPlan._parse(args)


@dataclass
class ForcingState:
    """Where one request stands: thinking, forcing a sequence, or answering.

    Drive it with :meth:`pending` (a token that must come next, if any), :meth:`banned_next`
    (tokens the model may not write next), :meth:`end_attempt` (the model tried to stop
    thinking: returns the first token of what replaces the attempt) and :meth:`observe` (a
    token was produced). A model token that :meth:`banned_next` ruled out raises
    :class:`ForcingMismatch`: it means the engine did not apply the budget.
    """

    plan: ForcingPlan
    phase: Phase = _THINKING
    thinking_tokens: int = 0
    answer_tokens: int = 0
    position: int = 0
    inserted: int = 0
    ended_by: str | None = None
    extension_positions: list[int] = field(default_factory=list)
    thinking_end: int | None = None  # output index where the end delimiter starts
    answer_start: int | None = None  # output index of the first answer token
    answer_capped: bool = False
    landed: bool = False  # the soft landing ended the thinking at a break
    _queue: deque[tuple[int, _Kind]] = field(default_factory=deque)
    _tail: deque[int] = field(default_factory=deque)
    # The model's own tokens since the last forced token (or the start of the answer), as
    # far back as a multi-token ban needs: vLLM's bad_words see a round's output the same way.
    _recent: deque[int] = field(default_factory=deque)
    previous_token: int | None = None  # the last token observed, forced or not
    #: Per extension, the policy's signal that triggered it (``None``: not the policy's).
    extension_signals: list[float | None] = field(default_factory=list)
    end_signal: float | None = None  # the signal when the policy let the thinking end
    #: Whether this state starts the early exit itself, from the top-1s it is given (the
    #: processor, rounds); a replay reads it off the forced tokens instead (:meth:`early_exit`).
    exits: bool = True
    exit_at: int | None = None  # output index where the early exit's forcing began
    _signals: SignalTracker | None = None
    _stretch: Stretch | None = None  # the early exit's run of confident model tokens
    _next_top1: float | None = None

    def __post_init__(self) -> None:
        self._recent = deque(maxlen=self.plan._ban_memory or 1)
        if self.plan.adaptive:
            self._signals = SignalTracker(self.plan.adaptive_signal or "")
        if self.plan.early_exit:
            self._stretch = Stretch(self.plan.exit_threshold)

    @property
    def forcing(self) -> bool:
        return bool(self._queue)

    @property
    def forcing_left(self) -> int:
        """Tokens still to be forced, this one included (a phrase's or the end's length
        right after :meth:`end_attempt`)."""
        return len(self._queue)

    def extension_due(self, extend: bool | None = None) -> tuple[int, ...] | None:
        """The phrase to insert if the model tried to stop now, or ``None`` to let it stop.

        Under an adaptive policy, past the minimum, the signal decides; ``extend`` overrides
        it with a decision already taken (the replay reads it off the forced tokens, rather
        than trust a signal recomputed from log-probabilities to land on the same side).
        """
        plan = self.plan
        if self.thinking_tokens >= plan.min_thinking:
            if plan.adaptive:
                if self.inserted >= plan.adaptive_max:
                    return None
                if extend is None:
                    assert self._signals is not None  # made with the state for such plans
                    extend = not confident(self._signals.value, plan.adaptive_threshold)
                if not extend:
                    return None
            elif self.inserted >= plan.extensions:
                return None
        phrase = plan.phrases[self.inserted % len(plan.phrases)]
        if plan.cap_from is not None and self.thinking_tokens + len(phrase) > plan.cap_from:
            return None  # the phrase no longer fits under the cap: the model may stop
        return phrase

    @property
    def signal_value(self) -> float | None:
        """The adaptive policy's signal over the model's tokens since the last extension."""
        return None if self._signals is None else self._signals.value

    def note_top1(self, probability: float) -> None:
        """The top-1 probability of the step whose token :meth:`observe` sees next.

        Folded into the signal (and the early exit's stretch) only if that token turns out to
        be the model's own thinking (not a forced one, nor the end); ignored without an
        adaptive policy.
        """
        self._next_top1 = probability

    def _policy_decides(self) -> bool:
        """Whether an attempt now is the policy's to judge (it could still extend)."""
        plan = self.plan
        return (
            plan.adaptive
            and self.thinking_tokens >= plan.min_thinking
            and self.inserted < plan.adaptive_max
            and self.extension_due(extend=True) is not None
        )

    @property
    def cap_due(self) -> bool:
        """Whether the cap (or a soft landing) ends the thinking now, whatever the model does."""
        cap_from = self.plan.cap_from
        return (
            self.phase is _THINKING
            and cap_from is not None
            and (self.landed or self.thinking_tokens >= cap_from)
        )

    @property
    def exit_ready(self) -> bool:
        """Whether the early exit's stretch is long enough, and the thinking has reached its
        minimum, to end the thinking (the cap, due at the same time, comes first)."""
        stretch = self._stretch
        return (
            stretch is not None
            and self.phase is _THINKING
            and stretch.length >= self.plan.exit_after
            and self.thinking_tokens >= self.plan.min_thinking
        )

    def exit_cut(self, ids: Sequence[int], top1: Sequence[float | None] | None) -> int | None:
        """How many of the model's next tokens ``ids`` (with their steps' top-1s) stand before
        the early exit ends the thinking, or ``None`` if it does not among them.

        The test :meth:`observe` and :attr:`exit_ready` apply token by token, run ahead on a
        round's tokens (the rounds strategy) before the state sees them.
        """
        stretch = self._stretch
        if stretch is None or not self.exits or self.phase is not _THINKING or not top1:
            return None
        plan = self.plan
        run = Stretch(stretch.threshold, stretch.length, stretch.lowest)
        count = self.thinking_tokens
        for i in range(min(len(ids), len(top1))):
            count += 1
            run.add(top1[i])
            if run.length >= plan.exit_after and count >= plan.min_thinking:
                return i + 1
        return None

    def early_exit(self, measured: float | None = None) -> None:
        """End the thinking by the policy's early exit now (a replay, reading it off the
        forced tokens); ``measured`` is the engine's signal there, if it reported one."""
        assert self.phase is _THINKING and not self._queue
        stretch = self._stretch
        self._start_exit(stretch.lowest if measured is None and stretch else measured)

    def _start_exit(self, signal: float | None) -> None:
        self.ended_by = "early_exit"
        self.end_signal = signal
        self.exit_at = self.position
        self._enqueue(self.plan.conclusion, _FORCED_THINKING)
        self._enqueue(self.plan.end, _FORCED_END)

    def pending(self) -> int | None:
        """The token that must be produced next, starting the cap's forcing when it is due
        (or the early exit's, where this state starts it)."""
        if not self._queue:
            plan = self.plan
            if self.cap_due:
                self.ended_by = "budget"
                self._enqueue(plan.conclusion, _FORCED_THINKING)
                self._enqueue(plan.end, _FORCED_END)
            elif self._stretch is not None and self.exits and self.exit_ready:
                self._start_exit(self._stretch.lowest)
            elif (
                self.phase is _ANSWERING
                and plan.max_answer is not None
                and self.answer_tokens >= plan.max_answer
            ):
                self._enqueue(plan.eos[:1], _FORCED_EOS)
        return self._queue[0][0] if self._queue else None

    def quiet_room(self) -> int:
        """How many of the model's next tokens :meth:`count_quiet` may take before the state
        must see one: none while a sequence is being forced, after the end, or where the plan
        is not :attr:`~ForcingPlan.quiet` (:attr:`~ForcingPlan.quiet_answer` in the answer);
        otherwise all up to where the cap becomes due (the thinking's, or the answer's end of
        sequence)."""
        plan = self.plan
        if self._queue:
            return 0
        phase = self.phase
        if phase is _THINKING and plan.quiet:
            cap, count = plan.cap_from, self.thinking_tokens
        elif phase is _ANSWERING and plan.quiet_answer:
            cap, count = plan.max_answer, self.answer_tokens
        else:
            return 0
        if cap is None:
            return sys.maxsize
        return max(cap - count - 1, 0)

    def fold_top1(self, probability: float) -> None:
        """The top-1 probability of a step whose token :meth:`count_quiet` will take:
        folded into the policy's signal now, in the order :meth:`observe` folds them."""
        if self._signals is not None:
            self._signals.add(probability)

    def count_quiet(self, n: int, last: int) -> None:
        """``n`` tokens of the model's, none of them :attr:`~ForcingPlan.special`, the last
        being ``last``, taken within :meth:`quiet_room`: exactly what :meth:`observe` does with
        each of them, thinking or answering, in one step (the processor's hot path)."""
        if self.phase is _THINKING:
            self.thinking_tokens += n
        else:
            self.answer_tokens += n
        self.position += n
        self._recent.append(last)  # a quiet plan's bans look back one token at most
        self.previous_token = last
        self._next_top1 = None

    def banned_next(self) -> tuple[int, ...]:
        """Tokens the model may not write next: they would complete a suppressed delimiter.

        While thinking that is the start delimiter (the block is already open: a model whose
        template opened it and that writes its own would nest a second one); once the thinking
        has ended, both delimiters, so the answer can never reopen or re-close the thinking.
        Nothing is banned while a sequence is being forced or after the end.
        """
        if self._queue:
            return ()
        phase = self.phase
        if phase is _THINKING:
            singles, multis = self.plan._thinking_bans
        elif phase is _ANSWERING:
            singles, multis = self.plan._answer_bans
        else:
            return ()
        if not multis:
            return singles
        banned = list(singles)
        recent = self._recent
        for prefix, last in multis:
            n = len(prefix)
            if len(recent) >= n and tuple(islice(recent, len(recent) - n, None)) == prefix:
                banned.append(last)
        return tuple(banned)

    def replacement(self) -> int:
        """What :meth:`end_attempt` would return now, without recording an attempt.

        Lets the processor prepare the replacement before it knows whether the model tries
        to stop (on a GPU that is decided on the device, and read back a step later).
        """
        phrase = self.extension_due()
        return phrase[0] if phrase is not None else self.plan.end[0]

    def end_attempt(self, extend: bool | None = None, measured: float | None = None) -> int:
        """The model tried to end its thinking: extend it, or close the block properly.

        ``extend`` is a policy decision already taken (see :meth:`extension_due`);
        ``measured`` the policy's signal there as the engine measured it, reported instead
        of this state's own (a replay from the engine's records has it, and no top-1s).
        """
        assert self.phase is _THINKING and not self._queue
        policy = self._policy_decides()
        signal = (self.signal_value if measured is None else measured) if policy else None
        phrase = self.extension_due(extend)
        if phrase is not None:
            self.extension_positions.append(self.position)
            self.extension_signals.append(signal)
            self.inserted += 1
            if self._signals is not None:
                self._signals.reset()  # the signal covers the tokens since this extension
            self._enqueue(phrase, _FORCED_THINKING)
        else:
            if policy:
                self.ended_by = "policy"
                self.end_signal = signal
            else:
                self.ended_by = "model"
            self._enqueue(self.plan.end, _FORCED_END)
        return self._queue[0][0]

    def observe(self, token: int) -> None:
        if self._queue:
            expected, kind = self._queue.popleft()
            if token != expected:
                raise ForcingMismatch(
                    f"expected forced token {expected} at output position {self.position}, "
                    f"got {token}"
                )
            self._recent.clear()  # a forced token separates what the model wrote
            if self._stretch is not None:
                self._stretch.reset()  # and is no evidence of the model's confidence
            if kind is _FORCED_THINKING:
                self.thinking_tokens += 1
                self._tail.clear()
            elif kind is _FORCED_END:
                if self.thinking_end is None:
                    self.thinking_end = self.position
                if not self._queue:
                    self._start_answer()
            else:
                self.answer_capped = True
                self.phase = _FINISHED
        elif self.phase is _THINKING:
            if token in self.plan._banned_lasts:
                self._check_allowed(token)
            self._observe_thinking(token)
        elif self.phase is _ANSWERING:
            if token in self.plan._banned_lasts:
                self._check_allowed(token)
            if token in self.plan.eos:
                self.phase = _FINISHED
            else:
                self.answer_tokens += 1
                self._recent.append(token)
        self.previous_token = token
        self.position += 1
        self._next_top1 = None

    def _check_allowed(self, token: int) -> None:
        if token in self.banned_next():
            where = "thinking" if self.phase is _THINKING else "answer"
            raise ForcingMismatch(
                f"the model wrote token {token} at output position {self.position}, which "
                f"completes a thinking delimiter suppressed in the {where}: the engine did not "
                "apply the budget (is the budget-forcing processor loaded there?)"
            )

    def _observe_thinking(self, token: int) -> None:
        plan = self.plan
        end = plan.end
        self.thinking_tokens += 1
        if len(end) == 1:
            closed = token == end[0]
        else:
            tail = self._tail
            tail.append(token)
            if len(tail) > len(end):
                tail.popleft()
            closed = len(tail) == len(end) and tuple(tail) == end
        if closed:
            # The model closed the block itself; its delimiter tokens are not thinking.
            self.thinking_tokens -= len(end)
            self.thinking_end = self.position - len(end) + 1
            self.ended_by = "model"
            self._start_answer()
        elif token in plan.eos:
            # Only reachable when nothing forced this request (e.g. replaying a bare output).
            self.thinking_tokens -= 1
            self.phase = _FINISHED
        else:
            self._recent.append(token)
            if self._signals is not None and self._next_top1 is not None:
                self._signals.add(self._next_top1)
            if self._stretch is not None:
                self._stretch.add(self._next_top1)
            landing_from = plan.landing_from
            if (
                landing_from is not None
                and self.thinking_tokens > landing_from
                and self.is_break(token, self.previous_token)
            ):
                self.landed = True  # pending() forces the conclusion and the delimiter next

    def is_break(self, token: int, previous: int | None) -> bool:
        """Whether ``token`` after ``previous`` is a natural place to stop (line/sentence end)."""
        breaks, weak, digits = self.plan._break_sets
        return token in breaks or (token in weak and previous not in digits)

    def _start_answer(self) -> None:
        self.phase = _ANSWERING
        self.answer_start = self.position + 1
        self._tail.clear()
        self._recent.clear()

    def _enqueue(self, ids: tuple[int, ...], kind: _Kind) -> None:
        self._queue.extend((t, kind) for t in ids)


class Replayer:
    """Replays :class:`ForcingState` over an engine's output as it grows.

    ``forced[i]`` says whether token ``i`` was forced (its processed log-probability was
    exactly 0: every alternative masked). A forced run where the model could have tried to
    stop is how an inserted phrase is told apart from the model writing the phrase itself.
    Tokens are classified only once the longest forced sequence could be seen whole.

    An early exit is read off the forced tokens too (the conclusion and the end delimiter
    where nothing else forces them); where the conclusion is empty, its forced end delimiter
    looks like a replaced attempt, and the engine's records (``exits``) or, without them, the
    stretch of top-1s the output reports tell the two apart.
    """

    def __init__(self, plan: ForcingPlan) -> None:
        self.state = ForcingState(plan, exits=False)
        self.ids: list[int] = []
        self.forced: list[bool] = []
        self.top1: list[float | None] = []  # per token, its step's top-1 probability
        self.measured: dict[int, float | None] = {}  # the engine's signal, by attempt position
        self.exits: set[int] | None = None  # early exits' positions, where records name them
        self._exit_run = (*plan.conclusion, *plan.end)
        longest = len(self._exit_run) if plan.early_exit else len(plan.end)
        self._lookahead = max(longest, *(len(p) for p in plan.phrases), 1)
        # Whether runs of the model's ordinary tokens may be counted in one step where the
        # state allows it (its quiet_room, as the processor's quiet lane counts them): not
        # once top-1s are given, which the thinking folds token by token.
        self._counting = True

    def feed(
        self,
        ids: list[int],
        forced: list[bool],
        final: bool = False,
        top1: Sequence[float | None] | None = None,
        measured: Mapping[int, float | None] | None = None,
        exits: Collection[int] | None = None,
    ) -> None:
        """More output; ``top1`` (per token, for an adaptive plan) lets the result report
        the policy's signal values, which the decisions themselves are never read from
        (only where an early exit and a replaced attempt force the same end delimiter, and
        no records say which, does the stretch of top-1s name the end cause).
        ``measured`` gives them instead, by output position, as the engine's records do, and
        ``exits`` the positions where those records say an early exit began."""
        if measured:
            self.measured.update(measured)
        if exits is not None:
            self.exits = {*(self.exits or ()), *exits}
        if top1 is not None:
            self._counting = False
        self.ids.extend(ids)
        self.forced.extend(forced)
        self.top1.extend(top1 if top1 is not None else [None] * len(ids))
        state = self.state
        limit = len(self.ids) if final else len(self.ids) - self._lookahead + 1
        multi_end = len(state.plan.end) > 1  # per token below: only such an end needs a look
        while state.position < limit and state.phase is not _FINISHED:
            i = state.position
            if self._counting:
                n = self._ordinary_run(i, min(limit, i + state.quiet_room()))
                if n:
                    state.count_quiet(n, self.ids[i + n - 1])
                    continue
            p = self.top1[i]
            if p is not None:
                state.note_top1(p)
            if multi_end and self._whole_end_follows(i) and not self._exit_starts(i):
                # its tokens are the delimiter's, not thinking
                state.end_attempt(measured=self.measured.get(i))
            elif state.pending() is None and self.forced[i] and state.phase is _THINKING:
                if self._exit_starts(i):
                    state.early_exit(self.measured.get(i))
                else:
                    extend = self._forced_decision(i)
                    if extend is not None:
                        state.end_attempt(extend, self.measured.get(i))
            state.observe(self.ids[i])

    def _ordinary_run(self, i: int, stop: int) -> int:
        """How many tokens from ``i`` (up to ``stop``) are the model's own ordinary ones:
        none :attr:`~ForcingPlan.special`, none forced."""
        special, ids, forced = self.state.plan.special, self.ids, self.forced
        k = i
        while k < stop and not forced[k] and ids[k] not in special:
            k += 1
        return k - i

    def _whole_end_follows(self, i: int) -> bool:
        """A multi-token end delimiter starts at ``i`` while the model may still think.

        The processor forces the whole delimiter after an attempt to stop (an end of
        sequence), and without log-probabilities its tokens look like the model's own; read
        one by one they would count as thinking, and the cap could seem due inside them.
        Either way (the model's or forced after an attempt) the block ended by the model.
        """
        state = self.state
        plan = state.plan
        n = len(plan.end)
        if n == 1 or state.phase is not _THINKING or state.forcing:
            return False
        if tuple(self.ids[i : i + n]) != plan.end or state.extension_due() is not None:
            return False
        return not state.cap_due

    def _exit_starts(self, i: int) -> bool:
        """Whether the forced run at ``i`` is the policy's early exit."""
        state = self.state
        plan = state.plan
        if not plan.early_exit or not self.forced[i] or state.thinking_tokens < plan.min_thinking:
            return False
        if not self._forced_run_is(i, self._exit_run):
            return False
        if self.exits is not None:
            return i in self.exits
        # An attempt is replaced by a phrase or the end delimiter alone, never the conclusion.
        return bool(plan.conclusion) or state.exit_ready

    def _forced_decision(self, i: int) -> bool | None:
        """What a forced run at ``i`` says about an attempt to stop there.

        ``True``: the due (or, under an adaptive policy, the possible) phrase follows, so the
        attempt was extended; ``False``: the end delimiter follows where the model may stop;
        ``None``: no attempt was replaced here.
        """
        state = self.state
        phrase = state.extension_due(extend=True)
        if phrase is not None and self._forced_run_is(i, phrase):
            return True
        if state.extension_due(extend=False) is None and self._forced_run_is(i, state.plan.end):
            return False
        return None

    def _forced_run_is(self, i: int, sequence: tuple[int, ...]) -> bool:
        n = len(sequence)
        return tuple(self.ids[i : i + n]) == sequence and all(self.forced[i : i + n])


def replay(plan: ForcingPlan, token_ids: list[int], forced: list[bool]) -> ForcingState:
    """Classify a whole output at once (see :class:`Replayer`)."""
    replayer = Replayer(plan)
    replayer.feed(token_ids, forced, final=True)
    return replayer.state
