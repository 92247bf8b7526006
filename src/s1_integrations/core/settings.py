"""The settings both adapters take, defined once: budget fields, provider knobs, sampling.

``ChatBudgetForced`` (LangChain) and ``BudgetForcedLLM`` (LlamaIndex) both inherit
:class:`AdapterSettings`, so they accept the same constructor fields with the same types and
defaults, and resolve budgets and sampling options through the same code. The budget fields
are read off :class:`ThinkingBudget` and the sampling fields off :class:`SamplingOptions` when
this module is imported, so a field added to either appears in both adapters without an edit
here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, Literal, cast

from pydantic import (
    AliasChoices,
    BaseModel,
    Field,
    ValidationError,
    create_model,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo

from s1_integrations.core.budget import BudgetLike, ThinkingBudget
from s1_integrations.core.generator import BudgetForcedGenerator, SamplingOptions
from s1_integrations.core.knobs import (
    BUDGET_FIELDS,
    KNOB_FIELDS,
    EffortTable,
    ReasoningKnobs,
    resolve_budget,
    validate_budget_field,
)
from s1_integrations.core.numbers import Count
from s1_integrations.core.results import BudgetForcedResult, Strategy
from s1_integrations.core.samples import check_samples, refuse_a_lone_vote
from s1_integrations.core.votes import VoteMethod, check_method

#: Sampling fields (SamplingOptions' own, but the answer's constraints: the schema is per call
#: only, the tag follows from the tools).
SAMPLING_FIELDS: tuple[str, ...] = tuple(
    f for f in SamplingOptions.model_fields if f not in ("answer_schema", "answer_tag")
)
#: Parallel scaling: how many samples per prompt, and how they vote (``core/samples.py``).
SAMPLES_FIELDS: tuple[str, ...] = ("n", "vote")
#: Every per-call keyword that feeds the budget or the sampling options.
CALL_SETTINGS: frozenset[str] = frozenset(
    {*BUDGET_FIELDS, *KNOB_FIELDS, *SAMPLING_FIELDS, *SAMPLES_FIELDS, "answer_schema", "strategy"}
)


def _annotated(annotation: Any, info: FieldInfo) -> Any:
    return Annotated[(annotation, *info.metadata)] if info.metadata else annotation


def _budget_field(name: str, info: FieldInfo) -> tuple[Any, Any]:
    return (
        _annotated(cast(Any, info.annotation) | None, info),
        Field(
            default=None,
            description=f"{info.description} None: the generator's default budget's value.",
        ),
    )


def _knob_field(name: str, info: FieldInfo) -> tuple[Any, Any]:
    if name == "thinking_budget":  # Google's token count, or this library's whole budget
        return (
            int | ThinkingBudget | dict[str, Any] | None,
            Field(
                default=None,
                description=(
                    "Google's thinking budget (0 off, -1 no cap, N a cap), or a whole "
                    "ThinkingBudget (or dict) for this model, replacing the generator's default."
                ),
            ),
        )
    return (_annotated(info.annotation, info), Field(default=None, description=info.description))


def _sampling_field(name: str, info: FieldInfo) -> tuple[Any, Any]:
    extra: dict[str, Any] = {}
    if name == "stop":  # LangChain's standard name for it is stop_sequences
        extra["validation_alias"] = AliasChoices("stop", "stop_sequences")
    return (
        _annotated(info.annotation, info),
        Field(default=info.default, description=info.description, **extra),
    )


_FIELDS: dict[str, Any] = {
    **{n: _budget_field(n, i) for n, i in ThinkingBudget.model_fields.items()},
    **{n: _knob_field(n, i) for n, i in ReasoningKnobs.model_fields.items()},
    **{n: _sampling_field(n, SamplingOptions.model_fields[n]) for n in SAMPLING_FIELDS},
    "strategy": (
        Literal["single_pass", "rounds"] | None,
        Field(default=None, description="Forcing strategy; None takes the generator's."),
    ),
    "n": (
        Count,
        Field(
            default=1,
            ge=1,
            description="Samples per call, each budget-forced on its own; the answer is their "
            "vote. 1: one sample, no vote.",
        ),
    ),
    "vote": (
        VoteMethod,
        Field(
            default="majority",
            description="How n > 1 samples pick the answer: majority, shortest_majority or "
            "confidence.",
        ),
    ),
    "effort_table": (
        EffortTable,
        Field(
            default_factory=EffortTable,
            description="What each reasoning effort level means; entries given replace the "
            "defaults (see EffortTable).",
        ),
    ),
    "keep_reasoning": (
        bool,
        Field(
            default=False,
            description="Send earlier turns' reasoning back to the model (inside its thinking "
            "delimiters) instead of stripping it.",
        ),
    ),
}

if TYPE_CHECKING:
    _SettingsBase = BaseModel
else:
    _SettingsBase = create_model("_SettingsBase", __base__=BaseModel, **_FIELDS)


class AdapterSettings(_SettingsBase):
    """Budget fields, provider knobs and sampling options of an adapter, and their resolution.

    A budget field or knob left ``None`` is unset: the generator's default budget decides. Per
    call, the same names (and ``thinking_budget=``) override on top, through
    :func:`~s1_integrations.core.knobs.resolve_budget`.
    """

    if TYPE_CHECKING:  # the fields above, for type checkers
        temperature: float
        top_p: float
        top_k: int | None
        seed: int | None
        stop: tuple[str, ...]
        strategy: Strategy | None
        n: int
        vote: VoteMethod
        effort_table: EffortTable
        keep_reasoning: bool
        max_answer_tokens: int | None
        max_thinking_tokens: int | None
        max_tokens: int | None

    @model_validator(mode="before")
    @classmethod
    def _one_name_for_stop(cls, data: Any) -> Any:
        """``stop`` and ``stop_sequences`` are one field: given both, pydantic would keep one."""
        if isinstance(data, dict) and "stop" in data and "stop_sequences" in data:
            raise ValueError("stop and stop_sequences are one setting under two names; give one")
        return data

    @field_validator(*BUDGET_FIELDS, mode="before")
    @classmethod
    def _as_thinking_budget_takes_it(cls, value: Any, info: Any) -> Any:
        """A budget field takes what ThinkingBudget's own field takes (a phrase as a string)."""
        return None if value is None else validate_budget_field(info.field_name, value)

    @field_validator(*KNOB_FIELDS, mode="before")
    @classmethod
    def _as_the_knobs_take_it(cls, value: Any, info: Any) -> Any:
        """A knob takes what ReasoningKnobs takes, with its one clear error."""
        if value is None or (info.field_name == "thinking_budget" and not isinstance(value, int)):
            return value  # a whole budget: checked when resolved
        try:
            return getattr(ReasoningKnobs.model_validate({info.field_name: value}), info.field_name)
        except ValidationError as e:
            raise ValueError(str(e.errors()[0]["msg"]).removeprefix("Value error, ")) from None

    def engine_generator(self) -> BudgetForcedGenerator:
        """The generator this model object runs on (each adapter knows where it keeps it)."""
        raise NotImplementedError

    def model_settings(self) -> dict[str, Any]:
        """The budget fields and knobs this model object was given (its level of settings)."""
        names = (*BUDGET_FIELDS, *KNOB_FIELDS)
        return {n: getattr(self, n) for n in names if getattr(self, n) is not None}

    def check_settings(self) -> None:
        """Fail at construction, not at the first call: knobs, conflicts, field combinations.

        The generator's default budget is not known yet (the engine starts lazily), so the
        model's own level is checked over an empty budget; the call re-resolves it for real.
        """
        resolve_budget(ThinkingBudget(), self.model_settings(), effort_table=self.effort_table)

    def resolve(
        self, generator: BudgetForcedGenerator, call: dict[str, Any]
    ) -> tuple[ThinkingBudget, dict[str, Any]]:
        """(budget, generator keywords) for one call's already-checked keywords."""
        level = {k: call[k] for k in (*BUDGET_FIELDS, *KNOB_FIELDS) if k in call}
        if level.get("thinking_budget", 0) is None:
            del level["thinking_budget"]  # None per call: nothing given
        budget = resolve_budget(
            generator.default_budget,
            self.model_settings(),
            level,
            effort_table=self.effort_table,
            context_window=generator.max_model_len,
        )
        sampling: dict[str, Any] = {n: getattr(self, n) for n in SAMPLING_FIELDS}
        sampling.update({n: call[n] for n in SAMPLING_FIELDS if n in call})
        stop = sampling.get("stop")
        if stop is None:
            sampling["stop"] = ()
        elif isinstance(stop, str):
            sampling["stop"] = (stop,)
        if call.get("answer_schema") is not None:
            sampling["answer_schema"] = call["answer_schema"]
        SamplingOptions(**sampling)  # a bad option fails here, before the engine sees it
        options = {"strategy": call.get("strategy", self.strategy), **sampling}
        n, vote = call.get("n", self.n), call.get("vote", self.vote)
        check_samples(n, None)  # the engine's own limit is the generator's to check
        refuse_a_lone_vote(n, "vote" if "vote" in call else None)  # the model's waits for n
        check_method(vote)
        if n != 1:  # one sample is what every path, streams included, does without asking
            options.update(n=n, vote=vote)
        return budget, options


def constructor_names(cls: type[BaseModel]) -> set[str]:
    """Every name a model class's constructor reads: its fields and their aliases."""
    names = set(cls.model_fields)
    for info in cls.model_fields.values():
        if info.alias:
            names.add(info.alias)
        alias = info.validation_alias
        if isinstance(alias, str):
            names.add(alias)
        elif isinstance(alias, AliasChoices):
            names.update(c for c in alias.choices if isinstance(c, str))
    return names


def ask(
    target: BudgetForcedGenerator | AdapterSettings, question: str, budget: BudgetLike = None
) -> BudgetForcedResult:
    """One question to a generator (its ``budget=``) or a model object (its own settings, with
    ``budget`` replacing its budget as a per-call ``thinking_budget=`` does)."""
    if isinstance(target, BudgetForcedGenerator):
        return target.generate(question, budget)[0]
    generator = target.engine_generator()
    resolved, options = target.resolve(generator, _budget_call(budget))
    return generator.generate(question, resolved, **options)[0]


async def aask(
    target: BudgetForcedGenerator | AdapterSettings, question: str, budget: BudgetLike = None
) -> BudgetForcedResult:
    """:func:`ask` without blocking the event loop."""
    if isinstance(target, BudgetForcedGenerator):
        return (await target.agenerate(question, budget))[0]
    generator = target.engine_generator()
    resolved, options = target.resolve(generator, _budget_call(budget))
    return (await generator.agenerate(question, resolved, **options))[0]


def _budget_call(budget: BudgetLike) -> dict[str, Any]:
    return {} if budget is None else {"thinking_budget": budget}
