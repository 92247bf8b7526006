"""Other providers' reasoning knobs, and the one place every adapter budget is resolved.

A user switching from another provider brings its knobs: ``reasoning_effort`` (OpenAI, Groq,
xAI), ``reasoning={"effort": ...}`` (OpenAI's Responses API), Anthropic's
``thinking={"type": "enabled", "budget_tokens": N}``, Google's ``thinking_budget`` (0 off, -1
dynamic), Ollama's boolean ``reasoning`` / ``thinking``, and the ``max_tokens`` every chat
model takes. Each means something definite for an s1 budget, so each is mapped here onto
:class:`ThinkingBudget` fields, once, for both adapters: an adapter that interpreted them itself
would sooner or later give the same knob two meanings.

What the mapping promises:

* An effort level is an entry of an :class:`EffortTable` (documented defaults, replaceable per
  model object): the budget fields it names, nothing else.
* Within one level (a model's constructor fields, or one call's keywords), a knob and an
  explicit budget field, or two knobs, that set the same field to different values are a
  :class:`ConflictingSettingsError` naming both: there is no silent winner.
* Levels stack: the generator's default budget, then the model's fields, then the call's
  keywords. ``thinking_budget=ThinkingBudget(...)`` (or a dict) at a level replaces what the
  levels below it gave, exactly as ``BudgetForcedGenerator.generate(budget=...)`` takes it.
* Budget fields left unset (``None`` on a model) take the value from the level below, so a
  model object with no budget fields runs with the generator's default budget.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from typing import Any, Literal, get_args

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    ValidationError,
    field_validator,
    model_validator,
)

from s1_integrations.core.budget import BudgetError, ThinkingBudget, as_budget

#: The effort levels OpenAI's newest models take (``none`` ... ``xhigh``); ``minimal`` is
#: OpenAI's older name for the lowest thinking level.
EffortLevel = Literal["none", "minimal", "low", "medium", "high", "xhigh"]
EFFORT_LEVELS: tuple[str, ...] = get_args(EffortLevel)

#: The budget fields, read from :class:`ThinkingBudget` so that new ones flow through.
BUDGET_FIELDS: tuple[str, ...] = tuple(ThinkingBudget.model_fields)

#: Thinking off: no thinking tokens, and nothing that would ask for any.
OFF: dict[str, Any] = {"max_thinking_tokens": 0, "min_thinking_tokens": 0, "extensions": 0}


class ConflictingSettingsError(BudgetError):
    """Two settings given together that ask for different budgets.

    ``fields`` names both (the first is also :attr:`BudgetError.field`). Raised before anything
    reaches the engine.
    """

    def __init__(self, first: str, second: str, message: str) -> None:
        super().__init__(first, message)
        self.fields = (first, second)


def validate_budget_field(name: str, value: Any) -> Any:
    """``value`` as ThinkingBudget's field ``name`` takes it (a phrase string as a tuple).

    Only the field's own checks apply: whether it fits the other fields (a minimum below the
    cap) is decided once the whole budget is known, so a partial setting is not refused for a
    field that another level will supply.
    """
    try:
        return getattr(ThinkingBudget.model_validate({name: value}), name)
    except ValidationError as e:
        own = [err for err in e.errors() if tuple(err["loc"][:1]) == (name,)]
        if own:
            raise ValueError(str(own[0]["msg"]).removeprefix("Value error, ")) from None
        return value  # only the whole-budget checks complained


def _check_entry(entry: Mapping[str, Any]) -> dict[str, Any]:
    """An effort entry: budget field names only, each value valid for its field."""
    unknown = sorted(set(entry) - set(BUDGET_FIELDS))
    if unknown:
        raise ValueError(f"{unknown} are not ThinkingBudget fields; use some of {BUDGET_FIELDS}")
    return {name: validate_budget_field(name, value) for name, value in entry.items()}


class EffortTable(BaseModel):
    """What each effort level means, as the ThinkingBudget fields it sets.

    An entry names only the fields it decides; the others keep the value they would have had.
    The defaults suit reasoning models with long contexts (Qwen3, DeepSeek-R1 distills):

    ========= ================================================================
    level     budget
    ========= ================================================================
    none      ``max_thinking_tokens=0, min_thinking_tokens=0, extensions=0``
    minimal   ``max_thinking_tokens=256``
    low       ``max_thinking_tokens=1024``
    medium    ``max_thinking_tokens=4096``
    high      ``max_thinking_tokens=16384``
    xhigh     ``max_thinking_tokens=None, extensions=1`` (no cap, one "Wait")
    ========= ================================================================

    Replace entries per model object (``effort_table={"low": {"max_thinking_tokens": 64}}``);
    entries not given keep these defaults. A cap that does not fit the model's context is an
    error naming the knob, not a silently smaller cap.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    none: dict[str, Any] = Field(default_factory=lambda: dict(OFF))
    minimal: dict[str, Any] = Field(default_factory=lambda: {"max_thinking_tokens": 256})
    low: dict[str, Any] = Field(default_factory=lambda: {"max_thinking_tokens": 1024})
    medium: dict[str, Any] = Field(default_factory=lambda: {"max_thinking_tokens": 4096})
    high: dict[str, Any] = Field(default_factory=lambda: {"max_thinking_tokens": 16384})
    xhigh: dict[str, Any] = Field(
        default_factory=lambda: {"max_thinking_tokens": None, "extensions": 1}
    )

    @field_validator(*EFFORT_LEVELS)
    @classmethod
    def _valid_entry(cls, entry: dict[str, Any]) -> dict[str, Any]:
        return _check_entry(entry)

    def fields_for(self, level: str) -> dict[str, Any]:
        return dict(getattr(self, level))


DEFAULT_EFFORT_TABLE = EffortTable()


def as_effort_table(value: EffortTable | Mapping[str, Any] | None) -> EffortTable:
    """A table, a mapping of the entries to replace (the others keep the defaults), or None."""
    if value is None:
        return DEFAULT_EFFORT_TABLE
    if isinstance(value, EffortTable):
        return value
    return EffortTable.model_validate(dict(value))


class ReasoningParam(BaseModel):
    """OpenAI's ``reasoning={"effort": ...}`` (Responses API; LangChain's ``ChatOpenAI``).

    Only ``effort`` has a meaning here: a ``summary`` cannot be honoured (the whole thinking is
    returned, never a summary), so it is refused rather than dropped.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    effort: EffortLevel

    @model_validator(mode="before")
    @classmethod
    def _no_summary(cls, data: Any) -> Any:
        if isinstance(data, Mapping) and "summary" in data:
            raise ValueError(
                "summary: this model returns its whole thinking, never a summary; "
                "drop 'summary' (the thinking is in the response's reasoning)"
            )
        return data


class AnthropicThinking(BaseModel):
    """Anthropic's ``thinking`` (LangChain's ``ChatAnthropic``; LlamaIndex's ``thinking_dict``).

    ``enabled`` with ``budget_tokens`` caps the thinking there; ``disabled`` turns it off;
    ``adaptive`` lets the model decide (no cap).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    type: Literal["enabled", "disabled", "adaptive"]
    budget_tokens: StrictInt | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _budget_only_when_enabled(self) -> AnthropicThinking:
        if self.type == "enabled" and self.budget_tokens is None:
            raise ValueError('type "enabled" needs budget_tokens (the thinking cap)')
        if self.type != "enabled" and self.budget_tokens is not None:
            raise ValueError(f'budget_tokens has no meaning with type "{self.type}"')
        return self


class ReasoningKnobs(BaseModel):
    """The reasoning settings other providers' chat models take, validated; None: not given.

    Every knob here has one meaning in both adapters (docs/langchain.md, docs/llama_index.md
    list the provider each one comes from).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    reasoning_effort: EffortLevel | None = Field(
        default=None, description="OpenAI/Groq/xAI effort level, mapped by the effort table."
    )
    reasoning: StrictBool | EffortLevel | ReasoningParam | None = Field(
        default=None,
        description='Ollama on/off or effort; OpenAI\'s {"effort": ...}.',
    )
    thinking: StrictBool | EffortLevel | AnthropicThinking | None = Field(
        default=None,
        description="LlamaIndex Ollama on/off or effort; Anthropic's {'type': ...} dict.",
    )
    thinking_dict: AnthropicThinking | None = Field(
        default=None, description="LlamaIndex Anthropic's name for Anthropic's thinking dict."
    )
    thinking_budget: StrictInt | None = Field(
        default=None, ge=-1, description="Google's token budget: 0 off, -1 no cap, N a cap."
    )
    max_tokens: StrictInt | None = Field(
        default=None, ge=1, description="The answer's token limit (max_answer_tokens)."
    )

    @field_validator("reasoning", "thinking", mode="before")
    @classmethod
    def _dict_form(cls, value: Any, info: Any) -> Any:
        """A dict is the provider's dict form: validate it as that alone, for a clear error."""
        if isinstance(value, Mapping):
            model = ReasoningParam if info.field_name == "reasoning" else AnthropicThinking
            try:
                return model.model_validate(dict(value))
            except ValidationError as e:
                raise ValueError(_first_error(e)) from None
        return value


def _first_error(error: ValidationError) -> str:
    first = error.errors()[0]
    where = ".".join(str(p) for p in first["loc"])
    message = str(first["msg"]).removeprefix("Value error, ")
    return f"{where}: {message}" if where else message


#: Knob names, in the order their conflicts are reported.
KNOB_FIELDS: tuple[str, ...] = tuple(ReasoningKnobs.model_fields)
#: Everything one level of settings may contain.
SETTING_NAMES: frozenset[str] = frozenset({*BUDGET_FIELDS, *KNOB_FIELDS})

_ON = "on"  # thinking on, cap unchanged (unless a lower level turned it off)


def _effort(level: str, table: EffortTable) -> dict[str, Any]:
    return table.fields_for(level)


def _implied(name: str, value: Any, table: EffortTable) -> dict[str, Any] | str:
    """The budget fields one validated knob value sets, or ``_ON``."""
    if isinstance(value, bool):
        return _ON if value else dict(OFF)
    if isinstance(value, str):
        return _effort(value, table)
    if isinstance(value, ReasoningParam):
        return _effort(value.effort, table)
    if isinstance(value, AnthropicThinking):
        if value.type == "disabled":
            return dict(OFF)
        if value.type == "adaptive":
            return {"max_thinking_tokens": None}
        return {"max_thinking_tokens": value.budget_tokens}
    if name == "thinking_budget":
        if value == 0:
            return dict(OFF)
        return {"max_thinking_tokens": None if value == -1 else value}
    if name == "max_tokens":
        return {"max_answer_tokens": value}
    raise AssertionError(f"unhandled knob {name}={value!r}")  # pragma: no cover


def _show(name: str, value: Any) -> str:
    if isinstance(value, BaseModel):
        value = value.model_dump(exclude_none=True)
    return f"{name}={value!r}"


def _describe(fields: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in fields.items()) or "no budget change"


class _Claim:
    """A budget field's value at one level, and which setting asked for it."""

    __slots__ = ("knob", "source", "value")

    def __init__(self, value: Any, source: str, knob: str | None) -> None:
        self.value = value
        self.source = source
        self.knob = knob


def _split(level: Mapping[str, Any]) -> tuple[ThinkingBudget | None, dict[str, Any]]:
    """(the level's whole budget, if ``thinking_budget`` is one; the other settings)."""
    unknown = sorted(set(level) - SETTING_NAMES)
    if unknown:
        raise TypeError(f"not budget settings: {unknown}")
    rest = dict(level)
    given = rest.get("thinking_budget")
    if given is None or (isinstance(given, int) and not isinstance(given, bool)):
        return None, rest
    if isinstance(given, (ThinkingBudget, Mapping)):
        del rest["thinking_budget"]
        return as_budget(dict(given) if isinstance(given, Mapping) else given), rest
    raise TypeError(
        "thinking_budget must be a ThinkingBudget, a dict of its fields, or a token count "
        f"(0 off, -1 no cap), not {type(given).__name__}"
    )


def level_claims(
    level: Mapping[str, Any], table: EffortTable, below: Mapping[str, Any]
) -> dict[str, _Claim]:
    """One level's settings as budget field values, refusing settings that disagree.

    ``level`` holds only what was given there (adapters drop unset model fields); ``below`` is
    the budget the lower levels produced, which ``reasoning=True`` / ``thinking=True`` reads: on
    a budget that a lower level turned off, "on" lifts the cap (``max_thinking_tokens=None``).
    """
    fields = {k: v for k, v in level.items() if k in BUDGET_FIELDS}
    knob_values = {k: level[k] for k in KNOB_FIELDS if level.get(k) is not None}
    knobs = ReasoningKnobs.model_validate(knob_values)
    claims = {k: _Claim(v, _show(k, v), None) for k, v in fields.items()}
    on: list[str] = []
    for name in KNOB_FIELDS:
        value = getattr(knobs, name)
        if value is None:
            continue
        shown = _show(name, value)
        implied = _implied(name, value, table)
        if implied == _ON:
            on.append(name)
            continue
        assert isinstance(implied, dict)
        for field, wanted in implied.items():
            claim = claims.get(field)
            if claim is not None and claim.value != wanted:
                raise ConflictingSettingsError(
                    claim.knob or field,
                    name,
                    f"{shown} means {_describe(implied)}, but {claim.source} was given with it; "
                    "give one of them",
                )
            if claim is None:
                claims[field] = _Claim(wanted, shown, name)
    for name in on:
        shown = _show(name, getattr(knobs, name))
        cap = claims.get("max_thinking_tokens")
        if cap is not None and cap.value == 0:
            raise ConflictingSettingsError(
                cap.knob or "max_thinking_tokens",
                name,
                f"{shown} turns thinking on, but {cap.source} turns it off; give one of them",
            )
        if cap is None and below.get("max_thinking_tokens") == 0:
            claims["max_thinking_tokens"] = _Claim(None, shown, name)
    return claims


def resolve_budget(
    default: ThinkingBudget,
    *levels: Mapping[str, Any],
    effort_table: EffortTable | Mapping[str, Any] | None = None,
    context_window: int | None = None,
) -> ThinkingBudget:
    """The budget one call runs with: ``default``, then each level of settings over it.

    ``levels`` go from the least to the most specific (a model's fields, then a call's
    keywords); each holds only settings that were given. ``context_window`` (the model's, when
    known) turns a knob whose cap cannot fit into an error that names the knob.
    """
    table = as_effort_table(effort_table)
    current = default.model_dump()
    final: dict[str, _Claim] = {}
    for level in levels:
        whole, rest = _split(level)
        if whole is not None:
            current = whole.model_dump()
            final = {}
        claims = level_claims(rest, table, current)
        current.update({k: c.value for k, c in claims.items()})
        final.update(claims)
    budget = ThinkingBudget.model_validate(current)
    cap = final.get("max_thinking_tokens")
    if (
        context_window is not None
        and cap is not None
        and cap.knob is not None
        and budget.max_thinking_tokens is not None
        and budget.max_thinking_tokens >= context_window
    ):
        raise BudgetError(
            cap.knob,
            f"{cap.source} means max_thinking_tokens={budget.max_thinking_tokens}, which does "
            f"not fit this model's context of {context_window} tokens; choose a smaller "
            "setting, or give the model an effort_table that fits",
        )
    return budget


def reserved_output_tokens(budget: ThinkingBudget, end_tokens: int, context_window: int) -> int:
    """Room a prompt must leave for the thinking, its end delimiter and the answer.

    Frameworks that pack context into a prompt (LlamaIndex's ``num_output``) reserve only an
    answer's worth; a reasoning model also needs its thinking there (the cap, or else the
    minimum). At most half the window is reserved, so a prompt always fits.
    """
    thinking = budget.max_thinking_tokens
    if thinking is None:
        thinking = budget.min_thinking_tokens
    return min(thinking + end_tokens + budget.max_answer_tokens, context_window // 2)


#: Client settings of networked chat models. Here the engine runs in this process, so they
#: would mean nothing; they are refused with a pointer to where such settings do exist.
NETWORK_SETTINGS = frozenset(
    {"timeout", "request_timeout", "max_retries", "api_key", "base_url", "api_base"}
)


def check_names(
    given: Iterable[str], accepted: Iterable[str], owner: str, what: str = "keyword argument"
) -> None:
    """Refuse names nobody reads, with a "did you mean" for near misses.

    Both adapters refuse unknown constructor and per-call arguments with the same
    ``TypeError``: an argument that is silently dropped (a typo'd ``max_thinking_token=16``)
    runs with no cap and nobody notices.
    """
    accepted = sorted(set(accepted))
    unknown = sorted(set(given) - set(accepted))
    if not unknown:
        return
    plural = "s" if len(unknown) > 1 else ""
    parts = [f"{owner} got unexpected {what}{plural} {unknown}"]
    for name in unknown:
        if name in NETWORK_SETTINGS:
            parts.append(
                f"{name!r} is a network client setting, and this model runs vLLM in this "
                "process; for vLLM servers pass generator=BudgetForcedGenerator.from_servers(...) "
                "with its RemoteConfig settings"
            )
            continue
        close = difflib.get_close_matches(name, accepted, n=1, cutoff=0.75)
        if close:
            parts.append(f"did you mean {close[0]!r} (for {name!r})?")
    raise TypeError("; ".join(parts))
