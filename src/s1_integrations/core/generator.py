"""``BudgetForcedGenerator``: s1 budget forcing on one in-process vLLM engine."""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import threading
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator, Sequence
from typing import Any, cast

from pydantic import BaseModel, ConfigDict, Field, field_validator

from s1_integrations.core.budget import BudgetError, BudgetLike, ThinkingBudget, as_budget
from s1_integrations.core.forcing import EXTRA_ARGS_KEY, ForcingPlan, ForcingState, Phase
from s1_integrations.core.formats import BreakTokens, ThinkingFormat
from s1_integrations.core.plans import PlanBuilder
from s1_integrations.core.prompts import Prompt, PromptError, render_prompt
from s1_integrations.core.results import (
    BudgetForcedResult,
    FinalResult,
    Strategy,
    StreamEvent,
)
from s1_integrations.core.samples import aggregate, check_normaliser, check_samples, fan_out
from s1_integrations.core.schemas import check_answer_schema
from s1_integrations.core.tracking import OutputTracker, Prepared
from s1_integrations.core.votes import Normaliser, check_method
from s1_integrations.engine.engine import InProcessEngine
from s1_integrations.engine.remote import RemoteEngine

#: What a generator drives: vLLM in this process, or a fleet of vLLM servers.
Engine = InProcessEngine | RemoteEngine

#: Seeds of successive samples of one prompt lie this far apart (the rounds strategy seeds
#: round r with seed + r, so sample seeds must not meet within any realistic round count).
_SAMPLE_SEED_STRIDE = 1 << 20


class SamplingOptions(BaseModel):
    """Per-call sampling; greedy by default so budgets are reproducible."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    temperature: float = Field(default=0.0, ge=0.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    top_k: int | None = Field(default=None, ge=1)
    seed: int | None = None
    stop: tuple[str, ...] = ()
    answer_schema: dict[str, Any] | None = Field(
        default=None, description="JSON schema the answer must follow (thinking stays free)."
    )

    @field_validator("answer_schema", mode="before")
    @classmethod
    def _compilable(cls, schema: Any) -> Any:
        return None if schema is None else check_answer_schema(schema)


def _sampled_logprobs(output: Any) -> list[float] | None:
    """The processed log-probability of each sampled token (``None``: none were asked for).

    A token was forced iff its processed log-probability is exactly 0 (every alternative
    -inf); the confidence vote reads the same values for the answer tokens.
    """
    logprobs = output.logprobs
    token_ids = output.token_ids
    if logprobs is None:
        return None
    starts = getattr(logprobs, "start_indices", None)
    if starts is not None:  # vLLM's FlatLogprobs: one flat list per field, no dict per token
        ends, ids, values = logprobs.end_indices, logprobs.token_ids, logprobs.logprobs
        found = []
        for i, token in enumerate(token_ids):
            j = starts[i]  # the sampled token comes first at each position
            if ids[j] != token:
                j = ids.index(token, j, ends[i])
            found.append(float(values[j]))
        return found
    return [float(logprobs[i][token].logprob) for i, token in enumerate(token_ids)]


def _forced_flags(logprobs: list[float] | None, count: int) -> list[bool]:
    if logprobs is None:
        return [False] * count
    return [value == 0.0 for value in logprobs]


def _sample_seed(seed: int | None, sample: int) -> int | None:
    """Sample ``sample``'s own seed, far enough from the others' that rounds never share one.

    Sample 0 keeps the caller's seed, so ``n=1`` and the first of ``n`` samples agree.
    """
    return seed if seed is None or sample == 0 else seed + sample * _SAMPLE_SEED_STRIDE


def _sample_options(options: SamplingOptions, sample: int) -> SamplingOptions:
    """The call's options with sample ``sample``'s seed (:func:`_sample_seed`)."""
    seed = _sample_seed(options.seed, sample)
    return options if seed == options.seed else options.model_copy(update={"seed": seed})


def _signal_logprobs(options: SamplingOptions) -> int:
    """How many top log-probabilities the adaptive signal needs per token.

    Under greedy decoding the sampled token is the top-1 wherever the model chose (forced
    tokens are no evidence), so its own log-probability is enough, and vLLM skips a top-k
    over the batch at every step; a sampled token need not be the top-1.
    """
    return 0 if options.temperature == 0 else 1


def _top1_values(output: Any) -> list[float | None] | None:
    """Per token, the top-1 probability of its step (``logprobs=1``): the adaptive signal.

    vLLM lists the sampled token first and then the top ones, so the top-1 is the largest
    listed; where only the sampled token came back (a server), that is what is read.
    """
    logprobs = output.logprobs
    if logprobs is None:
        return None
    starts = getattr(logprobs, "start_indices", None)
    n = len(output.token_ids)
    if starts is not None:
        ends, values = logprobs.end_indices, logprobs.logprobs
        return [math.exp(max(values[starts[i] : ends[i]])) for i in range(n)]
    return [math.exp(max(float(v.logprob) for v in logprobs[i].values())) for i in range(n)]


class BudgetForcedGenerator:
    """Reasoning with a thinking budget: cap it, extend it with "Wait", get exact counts.

    Owns (or borrows) one :class:`InProcessEngine`; every call, sync or async, from any thread,
    goes to that engine, which batches them. ``strategy="single_pass"`` forces inside the engine
    with a logits processor; ``"rounds"`` is s1's loop of engine calls done on token ids.
    :meth:`from_servers` drives ``vllm serve`` replicas instead, with the same results.
    """

    def __init__(
        self,
        model: str | None = None,
        *,
        engine: Engine | None = None,
        budget: BudgetLike = None,
        thinking_format: ThinkingFormat | None = None,
        strategy: Strategy = "single_pass",
        **engine_args: Any,
    ) -> None:
        if engine is not None and (model is not None or engine_args):
            raise ValueError("pass either an engine or a model with engine arguments, not both")
        if strategy not in ("single_pass", "rounds"):
            raise ValueError(f"strategy: {strategy!r} is not 'single_pass' or 'rounds'")
        self._owns_engine = engine is None
        if engine is None:
            from s1_integrations.toy import toy_model_path

            if model is None:
                # The toy was trained in float32 and is tiny: keep it exact and reproducible.
                engine_args.setdefault("dtype", "float32")
            engine = InProcessEngine(model or toy_model_path(), **engine_args)
        self.engine = engine
        try:
            self.tokenizer = engine.tokenizer
            self._builder = PlanBuilder(self.tokenizer, thinking_format)
            self.thinking_format = self._builder.thinking_format
            self.end_ids = self._builder.end_ids
            self.eos_ids = self._builder.eos_ids
            self.ban_thinking = self._builder.ban_thinking
            self.ban_answer = self._builder.ban_answer
            self.default_budget = as_budget(budget)
            self.strategy: Strategy = strategy
            if engine.forcing_in_engine and engine.logprobs_mode != "processed_logprobs":
                raise ValueError(
                    "engine logprobs_mode must be 'processed_logprobs': forced tokens are "
                    "recognised by their processed log-probability"
                )
        except BaseException:
            if self._owns_engine:
                engine.close()
            raise
        self.model_name = engine.model

    @classmethod
    def from_servers(
        cls,
        base_urls: str | Sequence[str],
        *,
        budget: BudgetLike = None,
        thinking_format: ThinkingFormat | None = None,
        strategy: Strategy = "single_pass",
        **remote: Any,
    ) -> BudgetForcedGenerator:
        """Budget forcing on running vLLM servers (see :class:`RemoteConfig` for ``remote``).

        Single-pass forcing runs inside the servers when they have the plugin; otherwise every
        request runs in rounds over ``/v1/completions`` and its result says so
        (``strategy="rounds"``).
        """
        engine = RemoteEngine(base_urls, **remote)
        try:
            generator = cls(
                engine=engine, budget=budget, thinking_format=thinking_format, strategy=strategy
            )
        except BaseException:
            engine.close()
            raise
        generator._owns_engine = True
        return generator

    @property
    def max_model_len(self) -> int:
        return self.engine.max_model_len

    # -- preparing requests ---------------------------------------------------------------

    def plan_for(self, budget: ThinkingBudget) -> ForcingPlan:
        """The budget resolved to token ids for this model (remembered: budgets are frozen)."""
        return self._builder.plan_for(budget)

    def break_tokens(self) -> BreakTokens:
        """The vocabulary's line and sentence ends (soft landing), classified once."""
        return self._builder.break_tokens()

    def prepare(
        self,
        prompts: Prompt | Sequence[Prompt],
        budget: BudgetLike | Sequence[BudgetLike] = None,
        strategy: Strategy | None = None,
        tools: Sequence[dict[str, Any]] | None = None,
        structured: bool = False,
    ) -> list[Prepared]:
        """Validate and render everything before the engine sees anything."""
        items = _as_prompt_list(prompts)
        budgets = self._budgets(budget, len(items))
        strategy = strategy or self.strategy
        if strategy not in ("single_pass", "rounds"):
            raise ValueError(f"strategy: {strategy!r} is not 'single_pass' or 'rounds'")
        prepared = []
        for i, (prompt, b) in enumerate(zip(items, budgets, strict=True)):
            try:
                prompt_ids = render_prompt(prompt, self.tokenizer, self.thinking_format, tools)
            except PromptError as e:
                raise PromptError(f"prompts[{i}]: {e}") if len(items) > 1 else e from None
            plan = self.plan_for(b)
            room = self.max_model_len - len(prompt_ids)
            if room <= len(self.end_ids) + 1:
                raise PromptError(
                    f"prompts[{i}]: {len(prompt_ids)} tokens leave no room in the model's "
                    f"context of {self.max_model_len} tokens"
                )
            needed = (b.max_thinking_tokens or b.min_thinking_tokens) + len(self.end_ids) + 1
            if room < needed:
                field = "max_thinking_tokens" if b.max_thinking_tokens else "min_thinking_tokens"
                raise BudgetError(
                    field,
                    f"the prompt has {len(prompt_ids)} tokens and the model's context is "
                    f"{self.max_model_len}: {needed} more do not fit",
                )
            use = strategy if self.engine.forcing_in_engine else "rounds"
            if use == "single_pass" and len(plan.end) > 1 and (plan.needs_extensions or structured):
                use = "rounds"  # one pass cannot take back a delimiter it has already emitted
            if b.max_thinking_tokens is not None:
                limit = b.max_thinking_tokens + len(plan.end) + b.max_answer_tokens + 1
                max_tokens = min(room, limit)
            else:
                max_tokens = room
            prepared.append(Prepared(i, prompt_ids, b, plan, use, max_tokens))
        return prepared

    def _budgets(self, budget: BudgetLike | Sequence[BudgetLike], n: int) -> list[ThinkingBudget]:
        if isinstance(budget, (list, tuple)):
            if len(budget) != n:
                raise BudgetError("budget", f"{len(budget)} budgets given for {n} prompts")
            return [as_budget(b, self.default_budget) for b in budget]
        return [as_budget(budget, self.default_budget)] * n  # type: ignore[arg-type]

    def _tracker(self, item: Prepared, options: SamplingOptions) -> OutputTracker:
        return OutputTracker(item, self.tokenizer, item.budget.extension_phrases, options.stop)

    def _sampling_params(self, options: SamplingOptions, **overrides: Any) -> Any:
        """vLLM's parameters; by default only the finished output comes back (rounds use it)."""
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind

        kwargs: dict[str, Any] = {
            "n": 1,
            "temperature": options.temperature,
            "top_p": options.top_p,
            "seed": options.seed,
            "detokenize": False,
            "output_kind": RequestOutputKind.FINAL_ONLY,
        }
        if options.top_k is not None:
            kwargs["top_k"] = options.top_k
        kwargs.update(overrides)
        return SamplingParams(**kwargs)

    # -- single pass ----------------------------------------------------------------------

    async def _single_pass(
        self, item: Prepared, options: SamplingOptions, streaming: bool = True
    ) -> AsyncGenerator[StreamEvent, None]:
        """One engine request; ``streaming=False`` when only the final result is wanted.

        Without a caller waiting for deltas, no stop strings to watch and no schema to hand
        over to, vLLM is asked for the finished output alone (``FINAL_ONLY``) instead of one
        output per step, and the tracker reads it in one go. Forced tokens are told apart by
        their log-probability only where the plan can insert phrases (the only place the
        replay needs to know, see :class:`Replayer`); caps and answer caps replay from counts.
        """
        from vllm.sampling_params import RequestOutputKind

        options = _sample_options(options, item.sample)
        structured = options.answer_schema is not None
        needs_flags = item.plan.needs_extensions
        wants_logprobs = needs_flags or item.answer_logprobs
        adaptive = item.plan.adaptive  # the top-1 of each step, for the signal values reported
        final_only = not streaming and not options.stop and not structured
        params = self._sampling_params(
            options,
            max_tokens=item.max_tokens,
            logprobs=_signal_logprobs(options) if adaptive else 0 if wants_logprobs else None,
            flat_logprobs=wants_logprobs,
            output_kind=RequestOutputKind.FINAL_ONLY if final_only else RequestOutputKind.DELTA,
            extra_args={EXTRA_ARGS_KEY: item.plan.to_extra_args()},
            # A constrained answer is a second, grammar-bound request: stop at the delimiter.
            stop_token_ids=list(item.plan.end) if structured else None,
        )
        tracker = self._tracker(item, options)
        output_ids: list[int] = []
        stream = self.engine.stream(item.prompt_ids, params)
        try:
            async for output in stream:
                completion = output.outputs[0]
                ids = list(completion.token_ids)
                output_ids.extend(ids)
                logprobs = _sampled_logprobs(completion) if wants_logprobs else None
                forced = _forced_flags(logprobs if needs_flags else None, len(ids))
                top1 = _top1_values(completion) if adaptive else None
                for event in tracker.feed(ids, forced, top1=top1, logprobs=logprobs):
                    yield event
                if tracker.stopped_by_string:
                    break  # closing the stream aborts the request in the engine
        finally:
            await stream.aclose()  # type: ignore[attr-defined]
        if structured:
            for event in tracker.feed([], [], final=True):  # classify the whole thinking
                yield event
        if structured and tracker.state.phase is Phase.ANSWERING:
            answer, logprobs = await self._answer_round(item, output_ids, 0, options)
            for event in tracker.feed(answer, [False] * len(answer), logprobs=logprobs):
                yield event
        for event in tracker.feed([], [], final=True):
            yield event
        yield FinalResult(result=tracker.result(self.model_name))

    # -- rounds ---------------------------------------------------------------------------

    async def _run_once(self, prompt_ids: list[int], params: Any) -> Any:
        """The finished completion of one request (asked for alone: ``FINAL_ONLY``)."""
        final = None
        async for output in self.engine.stream(prompt_ids, params):
            final = output
        assert final is not None
        return final.outputs[0]

    async def _rounds(
        self, items: list[Prepared], options: SamplingOptions
    ) -> AsyncGenerator[tuple[int, StreamEvent], None]:
        """s1's algorithm on token ids: every round advances all unfinished prompts together.

        Each round generates only up to the remaining budget, stops at an attempt to end the
        thinking, and appends the extension phrase or the end delimiter as token ids; prefix
        caching means a round re-prefills only what the previous one added. The delimiters the
        processor masks go to vLLM as ``bad_words``, which vLLM applies to each round's own
        output, as the processor applies them to what the model wrote since the last forced
        token. With a soft landing, rounds inside the window also stop at every break token.
        """
        trackers = [self._tracker(item, options) for item in items]
        drivers = [ForcingState(item.plan) for item in items]
        outputs: list[list[int]] = [[] for _ in items]
        longest = [max(map(len, item.plan.delimiter_sequences)) for item in items]
        before_window = [False] * len(items)
        round_no = 0

        def append(
            k: int,
            ids: list[int],
            forced: bool,
            top1: list[float | None] | None = None,
            logprobs: list[float] | None = None,
        ) -> list[StreamEvent]:
            if not forced:
                state = drivers[k]
                for j, token in enumerate(ids):
                    if top1 is not None and top1[j] is not None:
                        state.note_top1(top1[j])  # type: ignore[arg-type]
                    state.observe(token)
            outputs[k].extend(ids)
            return trackers[k].feed(ids, [forced] * len(ids), top1=top1, logprobs=logprobs)

        while True:
            jobs: list[tuple[int, Any]] = []
            for k, (item, state) in enumerate(zip(items, drivers, strict=True)):
                if state.phase is not Phase.THINKING:
                    continue
                capped = _drain_forced(state)
                if capped:
                    for event in append(k, capped, True):
                        yield k, event
                    continue
                plan = item.plan
                room = item.max_tokens - len(outputs[k])
                stop_ids = list(plan.end_attempt_ids)
                before_window[k] = False
                if plan.max_thinking is not None:
                    room = min(
                        room, plan.max_thinking - len(plan.conclusion) - state.thinking_tokens
                    )
                    if plan.landing_from is not None:
                        ahead = plan.landing_from - state.thinking_tokens
                        if ahead <= 0:  # inside the window: any break may end the thinking
                            stop_ids += [*plan.breaks, *plan.weak_breaks]
                        elif max(ahead, longest[k]) < room:
                            # Up to the window (at least a delimiter's length, so trimming an
                            # open delimiter below always leaves progress), break-blind.
                            room = max(ahead, longest[k])
                            before_window[k] = True
                if room <= 0:
                    state.phase = Phase.FINISHED  # out of context while thinking
                    continue
                extra: dict[str, Any] = {
                    "stop_token_ids": stop_ids,
                    "bad_words": [self.thinking_format.start],
                }
                if len(plan.end) > 1:
                    extra.update(
                        stop=[self.thinking_format.end],
                        include_stop_str_in_output=True,
                        detokenize=True,
                        skip_special_tokens=False,  # the delimiter may hold special tokens
                    )
                if plan.adaptive:
                    # The policy's signal: each step's top-1 (processed) log-probability.
                    extra.update(logprobs=_signal_logprobs(options), flat_logprobs=True)
                base = _sample_seed(options.seed, item.sample)
                seed = None if base is None else base + round_no
                params = self._sampling_params(
                    options.model_copy(update={"seed": seed}), max_tokens=room, **extra
                )
                jobs.append((k, params))
            if not jobs:
                break
            completions = await asyncio.gather(
                *(self._run_once(items[k].prompt_ids + outputs[k], p) for k, p in jobs)
            )
            round_no += 1
            for (k, _), completion in zip(jobs, completions, strict=True):
                ids = list(completion.token_ids)
                state = drivers[k]
                natural = _strip_end_attempt(ids, completion, items[k].plan)
                attempt = natural is not ids
                top1 = _top1_values(completion) if items[k].plan.adaptive else None
                landed = _landing_cut(state, natural)
                if landed < len(natural):
                    # The landing ended the thinking at a break inside this round: what the
                    # model wrote after it was never part of the output (one pass stops there).
                    natural, attempt = natural[:landed], False
                elif before_window[k] and completion.finish_reason == "length" and not attempt:
                    # Cut at the window's edge, not by a forced token: a delimiter begun here
                    # would be split between two requests, where neither vLLM's bad_words nor
                    # its stop strings see it whole. Its tokens are generated again next round.
                    open_tail = _open_delimiter(natural, items[k].plan)
                    natural = natural[: len(natural) - open_tail]
                for event in append(k, natural, False, top1[: len(natural)] if top1 else None):
                    yield k, event
                if attempt and state.phase is Phase.THINKING:
                    state.end_attempt()
                    for event in append(k, _drain_forced(state), True):
                        yield k, event
                elif completion.finish_reason == "length" and items[k].plan.max_thinking is None:
                    state.phase = Phase.FINISHED  # out of context while thinking
        # The answers, all prompts together.
        answering = [k for k, state in enumerate(drivers) if state.phase is Phase.ANSWERING]
        answers = await asyncio.gather(
            *(
                self._answer_round(items[k], outputs[k], drivers[k].answer_tokens, options)
                for k in answering
            )
        )
        for k, (ids, logprobs) in zip(answering, answers, strict=True):
            for event in append(k, ids, False, logprobs=logprobs):
                yield k, event
        for k, tracker in enumerate(trackers):
            for event in tracker.feed([], [], final=True):
                yield k, event
            yield k, FinalResult(result=tracker.result(self.model_name))

    async def _answer_round(
        self, item: Prepared, output: list[int], answered: int, options: SamplingOptions
    ) -> tuple[list[int], list[float] | None]:
        """Generate the answer after a closed thinking block, constrained when asked to be.

        The thinking stays free; only the answer is held to ``answer_schema`` by vLLM's
        structured outputs, so even a small model emits valid JSON or tool calls. Returns the
        answer's token ids and, where the item wants them, their log-probabilities.
        """
        options = _sample_options(options, item.sample)
        from vllm.sampling_params import StructuredOutputsParams

        room = item.max_tokens - len(output)
        left = item.budget.max_answer_tokens - answered
        fmt = self.thinking_format
        # The answer can never open the thinking again, nor close it a second time.
        extra: dict[str, Any] = {"bad_words": [fmt.start, fmt.end]}
        if options.stop:
            extra.update(stop=list(options.stop), detokenize=True)
        if options.answer_schema is not None:
            extra["structured_outputs"] = StructuredOutputsParams(json=options.answer_schema)
        if item.answer_logprobs:
            extra.update(logprobs=0, flat_logprobs=True)
        if min(room, left) < 1:
            return [], None  # no room left for an answer: the result says "length"
        params = self._sampling_params(options, max_tokens=min(room, left), **extra)
        completion = await self._run_once(item.prompt_ids + output, params)
        return list(completion.token_ids), _sampled_logprobs(completion)

    # -- public API -----------------------------------------------------------------------

    def _check_adaptive(self, items: list[Prepared], options: SamplingOptions) -> None:
        """Refuse what would make one pass and rounds read different adaptive signals.

        The signal is the top-1 probability of the distribution sampled from; vLLM reports
        it after top-k/top-p truncation (which renormalises), and only as processed
        log-probabilities does it include the masks the budget applies.
        """
        adaptive = [it for it in items if it.plan.adaptive]
        if not adaptive:
            return
        if options.top_p < 1.0 or options.top_k is not None:
            raise BudgetError(
                "adaptive",
                "needs top_p=1 and no top_k: the signal is read off the whole distribution, "
                "which truncation renormalises",
            )
        if any(it.strategy == "rounds" for it in adaptive) and (
            self.engine.logprobs_mode != "processed_logprobs"
        ):
            raise BudgetError(
                "adaptive",
                "the rounds strategy reads the signal from processed log-probabilities, and "
                f"this engine's logprobs mode is {self.engine.logprobs_mode!r}",
            )
        if (
            isinstance(self.engine, RemoteEngine)
            and options.temperature > 0
            and any(it.strategy == "rounds" for it in adaptive)
        ):
            raise BudgetError(
                "adaptive",
                "servers return only the sampled token's log-probability, which is the top-1 "
                "only under greedy decoding: adaptive rounds on servers need temperature=0",
            )

    async def _events(
        self, items: list[Prepared], options: SamplingOptions, streaming: bool = True
    ) -> AsyncGenerator[tuple[int, StreamEvent], None]:
        """Events of all items, tagged with their index, strategies running side by side."""
        self._check_adaptive(items, options)  # before anything is submitted
        if len(items) == 1 and not streaming:
            # One request whose caller wants only the result (every adapter call): no runner
            # task and no queue, which cost such a call more than its tokens do. Streams keep
            # the path below, whose abort on break-out the reliability tests prove.
            (item,) = items
            if item.strategy == "single_pass":
                async with contextlib.aclosing(self._single_pass(item, options, False)) as one:
                    async for event in one:
                        yield item.index, event
            else:
                async with contextlib.aclosing(self._rounds(items, options)) as tagged:
                    async for _, event in tagged:
                        yield item.index, event
            return
        queue: asyncio.Queue[tuple[int, StreamEvent] | BaseException | None] = asyncio.Queue()
        rounds = [it for it in items if it.strategy == "rounds"]
        single = [it for it in items if it.strategy == "single_pass"]

        async def run_single(item: Prepared) -> None:
            async for event in self._single_pass(item, options, streaming):
                await queue.put((item.index, event))

        async def run_rounds() -> None:
            async for k, event in self._rounds(rounds, options):
                await queue.put((rounds[k].index, event))

        async def run_all() -> None:
            try:
                tasks = [run_single(it) for it in single]
                if rounds:
                    tasks.append(run_rounds())
                await asyncio.gather(*tasks)
                await queue.put(None)
            except asyncio.CancelledError:
                raise
            except BaseException as e:
                await queue.put(e)  # re-raised by the consumer below, in its own task

        runner = asyncio.ensure_future(run_all())
        try:
            while True:
                got = await queue.get()
                if got is None:
                    break
                if isinstance(got, BaseException):
                    raise got
                yield got
        finally:
            if not runner.done():
                runner.cancel()
                await asyncio.gather(runner, return_exceptions=True)

    async def agenerate(
        self,
        prompts: Prompt | Sequence[Prompt],
        budget: BudgetLike | Sequence[BudgetLike] = None,
        *,
        strategy: Strategy | None = None,
        tools: Sequence[dict[str, Any]] | None = None,
        n: int = 1,
        vote: str = "majority",
        normalise: Normaliser | None = None,
        **sampling: Any,
    ) -> list[BudgetForcedResult]:
        """Generate for one or many prompts; all of them go to the engine at once.

        With ``n`` > 1 every prompt is sampled n times, each sample budget-forced on its own,
        and its result is a :class:`VotedResult`: the winning sample's fields plus every
        sample and the vote (``majority``, ``shortest_majority`` or ``confidence``), over
        answers compared after ``normalise`` (by default the text after "answer is", case and
        edge punctuation ignored). Sampling is greedy unless ``temperature`` says otherwise.
        """
        options, items, fan = self._request(
            prompts, budget, strategy, tools, n, vote, sampling, normalise
        )
        return fan(await self._results(items, options))

    def generate(
        self,
        prompts: Prompt | Sequence[Prompt],
        budget: BudgetLike | Sequence[BudgetLike] = None,
        *,
        strategy: Strategy | None = None,
        tools: Sequence[dict[str, Any]] | None = None,
        n: int = 1,
        vote: str = "majority",
        normalise: Normaliser | None = None,
        **sampling: Any,
    ) -> list[BudgetForcedResult]:
        """Blocking :meth:`agenerate`; safe from many threads at once (the engine batches)."""
        # fail here, in the caller's thread; the prepared items then go to the engine's loop
        options, items, fan = self._request(
            prompts, budget, strategy, tools, n, vote, sampling, normalise
        )
        return fan(self.engine.run_sync(self._results(items, options)))

    def _request(
        self,
        prompts: Prompt | Sequence[Prompt],
        budget: BudgetLike | Sequence[BudgetLike],
        strategy: Strategy | None,
        tools: Sequence[dict[str, Any]] | None,
        n: int,
        method: str,
        sampling: dict[str, Any],
        normalise: Normaliser | None = None,
    ) -> tuple[
        SamplingOptions,
        list[Prepared],
        Callable[[list[BudgetForcedResult]], list[BudgetForcedResult]],
    ]:
        """Everything checked and prepared, plus how to turn the engine's results into ours."""
        n = check_samples(n, getattr(self.engine, "max_num_seqs", None))
        method = check_method(method)
        normaliser = check_normaliser(normalise)
        options = SamplingOptions(**_normalise_sampling(sampling))
        self._check_seed(options)
        items = self.prepare(prompts, budget, strategy, tools, options.answer_schema is not None)
        if n == 1:
            return options, items, lambda results: results
        items = fan_out(items, n, answer_logprobs=method == "confidence")

        def voted(results: list[BudgetForcedResult]) -> list[BudgetForcedResult]:
            return list(aggregate(results, n, method, normaliser))

        return options, items, voted

    def _check_seed(self, options: SamplingOptions) -> None:
        if options.seed is not None and not getattr(self.engine, "seeds_ok", True):
            raise ValueError(
                "seed: vLLM's CPU backend cannot seed requests when enable_chunked_prefill is "
                "on (a seeded request whose prompt is prefilled in chunks stops the engine); "
                "leave enable_chunked_prefill unset, or pass no seed"
            )

    async def _results(
        self, items: list[Prepared], options: SamplingOptions
    ) -> list[BudgetForcedResult]:
        results: list[BudgetForcedResult | None] = [None] * len(items)
        async for index, event in self._events(items, options, streaming=False):
            if isinstance(event, FinalResult):
                results[index] = event.result
        return [r for r in results if r is not None]

    async def astream(
        self,
        prompt: Prompt,
        budget: BudgetLike = None,
        *,
        strategy: Strategy | None = None,
        tools: Sequence[dict[str, Any]] | None = None,
        **sampling: Any,
    ) -> AsyncIterator[StreamEvent]:
        """Thinking deltas, answer deltas, an event per extension, then the final result."""
        options = SamplingOptions(**_normalise_sampling(_one_sample(sampling)))
        self._check_seed(options)
        items = self.prepare([prompt], [budget], strategy, tools, options.answer_schema is not None)
        async for event in self._stream_events(items, options):
            yield event

    async def _stream_events(
        self, items: list[Prepared], options: SamplingOptions
    ) -> AsyncGenerator[StreamEvent, None]:
        async with contextlib.aclosing(self._events(items, options)) as events:
            async for _, event in events:
                yield event

    def stream(
        self,
        prompt: Prompt,
        budget: BudgetLike = None,
        *,
        strategy: Strategy | None = None,
        tools: Sequence[dict[str, Any]] | None = None,
        **sampling: Any,
    ) -> Iterator[StreamEvent]:
        """Blocking :meth:`astream`; breaking out of the loop aborts the request."""
        options = SamplingOptions(**_normalise_sampling(_one_sample(sampling)))
        self._check_seed(options)
        items = self.prepare([prompt], [budget], strategy, tools, options.answer_schema is not None)
        return self.engine.iterate_sync(self._stream_events(items, options))

    def close(self) -> None:
        if self._owns_engine:
            self.engine.close()

    def __enter__(self) -> BudgetForcedGenerator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_shared_lock = threading.Lock()
_shared_generators: dict[tuple[str | None, str], BudgetForcedGenerator] = {}


def shared_generator(model: str | None, engine_args: dict[str, Any]) -> BudgetForcedGenerator:
    """One generator (one engine) per model and engine configuration, for the whole process.

    LangChain and LlamaIndex build, copy and rebind model objects freely; an engine holds the
    weights and the KV cache, so every adapter object with the same configuration shares it.
    A closed engine is replaced on the next use.
    """
    key = (model, json.dumps(engine_args, sort_keys=True, default=str))
    with _shared_lock:
        generator = _shared_generators.get(key)
        if generator is None or generator.engine.closed:
            generator = BudgetForcedGenerator(model, **engine_args)
            _shared_generators[key] = generator
        return generator


def _one_sample(sampling: dict[str, Any]) -> dict[str, Any]:
    """A stream is one sample's events: n samples and their vote belong to ``agenerate``."""
    for key in ("n", "vote", "normalise"):
        if key in sampling and not (key == "n" and sampling[key] == 1):
            raise ValueError(
                f"{key}: a stream yields one sample; use generate/agenerate for n samples"
            )
    sampling.pop("n", None)
    return sampling


def _normalise_sampling(sampling: dict[str, Any]) -> dict[str, Any]:
    stop = sampling.get("stop")
    if isinstance(stop, str):
        sampling = {**sampling, "stop": (stop,)}
    elif stop is None and "stop" in sampling:
        sampling = {k: v for k, v in sampling.items() if k != "stop"}
    return sampling


def _as_prompt_list(prompts: Prompt | Sequence[Prompt]) -> list[Prompt]:
    """One question, one chat, or a list of either."""
    if isinstance(prompts, str):
        return [prompts]
    if isinstance(prompts, Sequence) and prompts and isinstance(prompts[0], dict):
        return [cast(Prompt, prompts)]  # a single chat
    if isinstance(prompts, Sequence):
        if len(prompts) == 0:
            raise PromptError("prompts: no prompts given")
        return list(cast(Sequence[Prompt], prompts))
    raise PromptError(f"prompts: expected a string or a list, got {type(prompts).__name__}")


def _strip_end_attempt(ids: list[int], completion: Any, plan: ForcingPlan) -> list[int]:
    """The round's tokens without the attempt to stop thinking that ended it, if one did.

    A single-token delimiter or end of sequence stops the round as a stop token; a delimiter
    of several tokens stops it as a stop string, and its tokens are the tail of the output.
    """
    if completion.finish_reason != "stop" or not ids:
        return ids
    if ids[-1] in plan.end_attempt_ids:
        return ids[:-1]
    n = len(plan.end)
    if n > 1 and tuple(ids[-n:]) == plan.end:
        return ids[:-n]
    return ids


def _landing_cut(state: ForcingState, ids: list[int]) -> int:
    """How many of a round's tokens stand before the soft landing ends the thinking.

    ``len(ids)`` where it does not: the same test :class:`ForcingState` applies to each
    token, run ahead on the round's tokens before the state sees them.
    """
    start = state.plan.landing_from
    if start is None or state.phase is not Phase.THINKING:
        return len(ids)
    count = state.thinking_tokens
    previous = state.previous_token
    for i, token in enumerate(ids):
        count += 1
        if count > start and state.is_break(token, previous):
            return i + 1
        previous = token
    return len(ids)


def _open_delimiter(ids: list[int], plan: ForcingPlan) -> int:
    """How many trailing tokens of ``ids`` begin a delimiter sequence (a proper prefix)."""
    best = 0
    for seq in plan.delimiter_sequences:
        for n in range(min(len(seq) - 1, len(ids)), best, -1):
            if tuple(ids[-n:]) == seq[:n]:
                best = n
                break
    return best


def _drain_forced(state: ForcingState) -> list[int]:
    """Take the whole forced sequence the state asks for now (rounds append it at once)."""
    ids: list[int] = []
    token = state.pending()
    while token is not None:
        ids.append(token)
        state.observe(token)
        if not state.forcing:
            break
        token = state.pending()
    return ids
