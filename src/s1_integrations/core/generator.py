"""``BudgetForcedGenerator``: s1 budget forcing over one backend, the library's entry point.

The generator checks and prepares every call (``preparation.py``), hands it to a strategy
(``single_pass.py`` or ``rounds.py``) that drives the backend (``backend.py``), and turns n
samples into one voted result (``samples.py``). It imports no engine: backends are built by
name (``build_backend``), so a client of a server fleet runs without vLLM installed.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator, Sequence
from typing import Any

from s1_integrations.core.backend import Backend, build_backend
from s1_integrations.core.budget import BudgetError, BudgetLike, ThinkingBudget, as_budget
from s1_integrations.core.forcing import ForcingPlan
from s1_integrations.core.formats import BreakTokens, ThinkingFormat
from s1_integrations.core.plans import PlanBuilder
from s1_integrations.core.preparation import Preparer, check_strategy
from s1_integrations.core.prompts import Prompt, validate_tools
from s1_integrations.core.results import (
    BudgetForcedResult,
    FinalResult,
    Strategy,
    StreamEvent,
)
from s1_integrations.core.rounds import Rounds
from s1_integrations.core.samples import (
    aggregate,
    check_normaliser,
    check_samples,
    fan_out,
    refuse_a_lone_vote,
)
from s1_integrations.core.sampling import SamplingOptions
from s1_integrations.core.single_pass import SinglePass
from s1_integrations.core.strategy import Tagged, merged
from s1_integrations.core.toolcalls import tool_call_tag
from s1_integrations.core.tracking import Prepared
from s1_integrations.core.votes import Normaliser, check_method

__all__ = ["BudgetForcedGenerator", "SamplingOptions"]


class BudgetForcedGenerator:
    """Reasoning with a thinking budget: cap it, extend it with "Wait", get exact counts.

    Owns (or borrows) one backend: by default vLLM in this process (``model`` and
    ``engine_args`` go to it), or :meth:`from_servers` for a fleet of ``vllm serve``
    replicas, with the same results. Every call, sync or async, from any thread, goes to that
    backend, which batches them. ``strategy="single_pass"`` forces inside the engine with a
    logits processor; ``"rounds"`` is s1's loop of engine calls done on token ids.
    """

    def __init__(
        self,
        model: str | None = None,
        *,
        engine: Backend | None = None,
        budget: BudgetLike = None,
        thinking_format: ThinkingFormat | None = None,
        strategy: Strategy = "single_pass",
        **engine_args: Any,
    ) -> None:
        if engine is not None and (model is not None or engine_args):
            raise ValueError("pass either an engine or a model with engine arguments, not both")
        self.strategy: Strategy = check_strategy(strategy)
        self._owns_engine = engine is None
        if engine is None:
            from s1_integrations.toy import toy_model_path

            if model is None:
                # The toy was trained in float32 and is tiny: keep it exact and reproducible.
                engine_args.setdefault("dtype", "float32")
            engine = build_backend("in_process", model or toy_model_path(), **engine_args)
        self.engine: Backend = engine
        try:
            self.tokenizer = engine.tokenizer
            self._builder = PlanBuilder(self.tokenizer, thinking_format)
            self.thinking_format = self._builder.thinking_format
            self.end_ids = self._builder.end_ids
            self.eos_ids = self._builder.eos_ids
            self.ban_thinking = self._builder.ban_thinking
            self.ban_answer = self._builder.ban_answer
            self.default_budget = as_budget(budget)
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
        self._preparer = Preparer(
            self._builder, engine.max_model_len, engine.forcing_in_engine, self.default_budget
        )
        self._single_pass = SinglePass(engine, self.thinking_format, self.model_name)
        self._rounds = Rounds(engine, self.thinking_format, self.model_name)

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
        (``strategy="rounds"``). Needs no vLLM here: only HTTP and the model's tokenizer.
        """
        engine = build_backend("servers", base_urls, **remote)
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
        return self._preparer.prepare(prompts, budget, strategy or self.strategy, tools, structured)

    def _check_adaptive(self, items: list[Prepared], options: SamplingOptions) -> None:
        """Refuse what would make one pass and rounds read different adaptive signals.

        The signal is the top-1 probability of the distribution sampled from; vLLM reports
        it after top-k/top-p truncation (which renormalises), and only as processed
        log-probabilities does it include the masks the budget applies.
        """
        adaptive = [it for it in items if it.plan.measures_top1]
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
            not self.engine.reports_top1
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
    ) -> AsyncGenerator[Tagged, None]:
        """Events of all items, tagged with their index, strategies running side by side."""
        self._check_adaptive(items, options)  # before anything is submitted
        rounds = [it for it in items if it.strategy == "rounds"]
        single = [it for it in items if it.strategy == "single_pass"]
        sources = [
            *self._single_pass.sources(single, options, streaming),
            *self._rounds.sources(rounds, options, streaming),
        ]
        async with contextlib.aclosing(merged(sources)) as events:  # type: ignore[type-var]
            async for tagged in events:
                yield tagged

    async def agenerate(
        self,
        prompts: Prompt | Sequence[Prompt],
        budget: BudgetLike | Sequence[BudgetLike] = None,
        *,
        strategy: Strategy | None = None,
        tools: Sequence[dict[str, Any]] | None = None,
        n: int = 1,
        vote: str | None = None,
        normalise: Normaliser | None = None,
        **sampling: Any,
    ) -> list[BudgetForcedResult]:
        """Generate for one or many prompts; all of them go to the engine at once.

        With ``n`` > 1 every prompt is sampled n times, each sample budget-forced on its own,
        and its result is a :class:`VotedResult`: the winning sample's fields plus every
        sample and the vote (``majority``, the default, ``shortest_majority`` or
        ``confidence``), over answers compared after ``normalise`` (by default the text after
        "answer is", case and edge punctuation ignored); with one sample, ``vote`` and
        ``normalise`` are refused. Sampling is greedy unless ``temperature`` says otherwise.
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
        vote: str | None = None,
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
        method: str | None,
        sampling: dict[str, Any],
        normalise: Normaliser | None = None,
    ) -> tuple[
        SamplingOptions,
        list[Prepared],
        Callable[[list[BudgetForcedResult]], list[BudgetForcedResult]],
    ]:
        """Everything checked and prepared, plus how to turn the engine's results into ours."""
        n = check_samples(n, self.engine.max_num_seqs)
        refuse_a_lone_vote(n, "vote" if method is not None else None)
        refuse_a_lone_vote(n, "normalise" if normalise is not None else None)
        method = check_method(method or "majority")
        normaliser = check_normaliser(normalise)
        options = _options(sampling, tools)
        self._check_seed(options)
        items = self.prepare(prompts, budget, strategy, tools, options.constrained)
        if n == 1:
            return options, items, lambda results: results
        items = fan_out(items, n, answer_logprobs=method == "confidence")

        def voted(results: list[BudgetForcedResult]) -> list[BudgetForcedResult]:
            return list(aggregate(results, n, method, normaliser))

        return options, items, voted

    def _check_seed(self, options: SamplingOptions) -> None:
        if options.seed is not None and not self.engine.seeds_ok:
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
        options = _options(_one_sample(sampling), tools)
        self._check_seed(options)
        items = self.prepare([prompt], [budget], strategy, tools, options.constrained)
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
        options = _options(_one_sample(sampling), tools)
        self._check_seed(options)
        items = self.prepare([prompt], [budget], strategy, tools, options.constrained)
        return self.engine.iterate_sync(self._stream_events(items, options))

    def close(self) -> None:
        if self._owns_engine:
            self.engine.close()

    def __enter__(self) -> BudgetForcedGenerator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _one_sample(sampling: dict[str, Any]) -> dict[str, Any]:
    """A stream is one sample's events: n samples and their vote belong to ``agenerate``."""
    for key in ("n", "vote", "normalise"):
        if key in sampling and not (key == "n" and sampling[key] == 1):
            raise ValueError(
                f"{key}: a stream yields one sample; use generate/agenerate for n samples"
            )
    sampling.pop("n", None)
    return sampling


def _options(sampling: dict[str, Any], tools: Sequence[dict[str, Any]] | None) -> SamplingOptions:
    """A call's sampling options; with tools and a free answer, its tool calls held to them.

    A free choice lets the model answer in text or call: each ``<tool_call>`` block it opens
    in the answer is held to a call of one of ``tools`` (:func:`tool_call_tag`), so the calls
    parse and name real tools. An answer schema (a forced choice, structured output) already
    holds the whole answer.
    """
    options = SamplingOptions.from_call(sampling)
    if tools and not options.constrained:
        tag = tool_call_tag(validate_tools(tools))
        options = SamplingOptions.model_validate({**options.model_dump(), "answer_tag": tag})
    return options
