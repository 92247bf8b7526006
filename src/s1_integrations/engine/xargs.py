"""Budgets in plain words in ``vllm_xargs``, resolved on the server with its own tokenizer.

An ordinary OpenAI client (curl, the ``openai`` SDK, LangChain's ``ChatOpenAI``) cannot build
``s1_budget``, whose settings are token ids of the served model. So the processor also takes
the budget's own field names (``max_thinking_tokens``, ``extensions``, ``extension_phrases``,
...), the adaptive policy (``adaptive``, or its fields flat as ``adaptive_threshold`` and the
like, since ``vllm_xargs`` holds no objects) and ``reasoning_effort``, and turns them into
``s1_budget`` here, in the API server, with the served model's tokenizer and detected thinking
format, before vLLM schedules anything.

Nothing is silently ignored: a ``vllm_xargs`` key that looks like one of ours but is not (a
typo) or a value that does not fit is refused with a ``ValueError`` naming it (vLLM answers
HTTP 400 and keeps serving); plain words together with ``s1_budget`` or with vLLM's own
``thinking_token_budget`` are refused as conflicting, because they would set one cap twice.

The tokenizer is the one the server was started with: ``S1_SERVED_TOKENIZER`` when set,
otherwise the server command's ``--tokenizer`` or ``--model`` (or ``vllm serve MODEL``).
``reasoning_effort`` is mapped by :class:`~s1_integrations.core.knobs.EffortTable`, whose
defaults a server operator replaces with ``S1_EFFORT_TABLE`` (a JSON object, or the path of a
JSON file, of the entries to replace; ``s1-integrations serve --effort-table FILE`` sets it).
"""

from __future__ import annotations

import difflib
import json
import os
import sys
from collections.abc import Mapping, MutableMapping, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from s1_integrations.core.adaptive import AdaptivePolicy
from s1_integrations.core.budget import BudgetError, ThinkingBudget
from s1_integrations.core.forcing import EXTRA_ARGS_KEY
from s1_integrations.core.knobs import (
    BUDGET_FIELDS,
    EFFORT_LEVELS,
    EffortTable,
    as_effort_table,
    check_names,
    resolve_budget,
    validate_budget_field,
)
from s1_integrations.core.plans import PlanBuilder
from s1_integrations.engine.argv import flag_value
from s1_integrations.engine.records import RECORD_KEY

#: The per-request effort knob; its levels are the effort table's.
EFFORT_KEY = "reasoning_effort"
#: The adaptive policy's fields as flat keys (``vllm_xargs`` holds no objects): each one
#: sets that field of ``ThinkingBudget.adaptive``, the others keep their defaults.
ADAPTIVE_KEYS: dict[str, str] = {f"adaptive_{name}": name for name in AdaptivePolicy.model_fields}
#: Plain-word keys: the budget's own field names, the policy's flat keys, the effort level.
PLAIN_KEYS: frozenset[str] = frozenset({*BUDGET_FIELDS, *ADAPTIVE_KEYS, EFFORT_KEY})
#: Every ``vllm_xargs`` key the processor reads (``RECORD_KEY`` only from the in-process
#: engine: the processor refuses it elsewhere).
OUR_KEYS: frozenset[str] = frozenset({*PLAIN_KEYS, EXTRA_ARGS_KEY, RECORD_KEY})
#: Words that make a key ours for the typo check (other processors' keys pass untouched).
_OUR_WORDS = (
    "thinking",
    "extension",
    "effort",
    "conclusion",
    "landing",
    "answer_token",
    "adaptive",
    "exit_after",  # the early exit's fields without their adaptive_ prefix
    "exit_threshold",
    "budget_tokens",  # Anthropic's name for a thinking budget
)

TOKENIZER_ENV = "S1_SERVED_TOKENIZER"
EFFORT_TABLE_ENV = "S1_EFFORT_TABLE"


def looks_like_ours(key: str) -> bool:
    """Whether a ``vllm_xargs`` key is meant for budget forcing, if misspelled.

    ``vllm_xargs`` is shared by every custom processor and by vLLM itself (``session_id``,
    ``kv_transfer_params``), so only keys that are ours, start with ``s1``, use one of our
    words, or are a near miss of one of our names are checked.
    """
    lowered = key.lower()
    if lowered in OUR_KEYS or lowered.startswith("s1") or any(w in lowered for w in _OUR_WORDS):
        return True
    return bool(difflib.get_close_matches(lowered, OUR_KEYS, n=1, cutoff=0.75))


def load_effort_table(value: str | None = None) -> EffortTable:
    """The effort table a server operator gave (``S1_EFFORT_TABLE``), or the defaults.

    ``value`` (default: the environment variable) is a JSON object of the entries to replace,
    or the path of a file holding one. Raises ``ValueError`` naming where the bad entry is.
    """
    if value is None:
        value = os.environ.get(EFFORT_TABLE_ENV)
    if not value:
        return as_effort_table(None)
    where = f"{EFFORT_TABLE_ENV}={value!r}"
    text = value
    if not value.lstrip().startswith("{"):
        path = Path(value).expanduser()
        if not path.is_file():
            raise ValueError(f"{where}: neither a JSON object nor the path of a file")
        where, text = f"effort table {path}", path.read_text(encoding="utf-8")
    return _parse_effort_table(where, text)


@lru_cache(maxsize=4)
def _parse_effort_table(where: str, text: str) -> EffortTable:
    """Parsed once per content: every request naming an effort level reads the table."""
    try:
        entries = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"{where}: not JSON ({e})") from None
    if not isinstance(entries, dict):
        raise ValueError(f"{where}: expected a JSON object of effort levels")
    try:
        return as_effort_table(entries)
    except ValidationError as e:
        first = e.errors()[0]
        loc = ".".join(str(p) for p in first["loc"])
        message = str(first["msg"]).removeprefix("Value error, ")
        raise ValueError(f"{where}: {loc}: {message}") from None


def served_tokenizer_source(argv: Sequence[str] | None = None) -> str | None:
    """Where the served model's tokenizer is: the environment, else the server's command."""
    env = os.environ.get(TOKENIZER_ENV)
    if env:
        return env
    argv = list(sys.argv if argv is None else argv)
    for flag in ("--tokenizer", "--model"):
        value = flag_value(argv, flag)
        if value is not None:
            return value
    if len(argv) > 2 and argv[1] == "serve" and not argv[2].startswith("-"):
        return argv[2]
    return None


@lru_cache(maxsize=2)
def _builder_for(source: str) -> PlanBuilder:
    from transformers import AutoTokenizer

    return PlanBuilder(AutoTokenizer.from_pretrained(source))


def served_builder() -> PlanBuilder:
    """The served model's tokenizer and thinking format, loaded once per process."""
    source = served_tokenizer_source()
    if source is None:
        raise ValueError(
            "vllm_xargs: budgets in plain words need the served model's tokenizer, and this "
            f"server does not say which it is; start it with s1-integrations serve, or set "
            f"{TOKENIZER_ENV}, or send s1_budget"
        )
    try:
        return _builder_for(source)
    except Exception as e:  # a tokenizer that will not load, a model without a format
        raise ValueError(f"vllm_xargs: cannot resolve budgets for {source!r}: {e}") from None


def _policy(words: Mapping[str, Any]) -> dict[str, Any]:
    """The plain words with the adaptive policy folded into one ``adaptive`` value.

    ``adaptive`` itself is ``true`` (or 1) for the default policy, ``false`` (or 0) for none,
    or a JSON object of the policy's fields; ``adaptive_signal``, ``adaptive_threshold``,
    ``adaptive_max_extensions``, ``adaptive_exit_after`` and ``adaptive_exit_threshold`` set
    one field each. ``ValueError`` names the key at fault.
    """
    flat = {ADAPTIVE_KEYS[k]: v for k, v in words.items() if k in ADAPTIVE_KEYS}
    out = {k: v for k, v in words.items() if k not in ADAPTIVE_KEYS}
    if "adaptive" not in out and not flat:
        return out
    policy: dict[str, Any] | None = {}
    if "adaptive" in out:
        policy = _policy_value(out["adaptive"])
        if policy is None and flat:
            raise ValueError(
                f"vllm_xargs: adaptive is off but {sorted(f'adaptive_{k}' for k in flat)} "
                "set its fields; send one of them"
            )
        twice = sorted(set(flat) & set(policy or {}))
        if twice:
            raise ValueError(
                f"vllm_xargs: adaptive and adaptive_{twice[0]} both set {twice[0]}; send one"
            )
    if policy is not None:
        policy = {**policy, **flat}
        try:
            AdaptivePolicy.model_validate(policy)
        except ValidationError as e:
            first = e.errors()[0]
            name = str(first["loc"][0]) if first["loc"] else ""
            key = f"adaptive_{name}" if name in flat else "adaptive"
            message = str(first["msg"]).removeprefix("Value error, ")
            raise ValueError(f"vllm_xargs.{key}: {message}") from None
    out["adaptive"] = policy
    return out


def _policy_value(value: Any) -> dict[str, Any] | None:
    """``adaptive``'s value: the policy's fields, or None (no policy)."""
    if value in (True, 1, "true"):
        return {}
    if value in (False, 0, "false"):
        return None
    if isinstance(value, str):
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError:
            parsed = None
        if isinstance(parsed, dict):
            return parsed
    raise ValueError(
        f"vllm_xargs.adaptive: {value!r} is not true, false or a JSON object of the policy's "
        f"fields {list(AdaptivePolicy.model_fields)}"
    )


def plain_budget(
    words: Mapping[str, Any], effort_table: EffortTable | None = None
) -> ThinkingBudget:
    """The budget that plain-word ``vllm_xargs`` ask for; ``ValueError`` naming the key.

    Each value is checked against its own field first (so the error names that key), then the
    whole, through :func:`~s1_integrations.core.knobs.resolve_budget`: the same mapping and
    conflict rules the adapters use (``reasoning_effort="none"`` with a cap above 0 is a
    conflict, not a silent winner).
    """
    words = _policy(words)
    for key, value in words.items():
        if key == EFFORT_KEY:
            if value not in EFFORT_LEVELS:
                raise ValueError(
                    f"vllm_xargs.{EFFORT_KEY}: {value!r} is not one of {list(EFFORT_LEVELS)}"
                )
            continue
        try:
            validate_budget_field(key, value)
        except ValueError as e:
            raise ValueError(f"vllm_xargs.{key}: {e}") from None
    table = effort_table if effort_table is not None else load_effort_table()
    try:
        return resolve_budget(ThinkingBudget(), dict(words), effort_table=table)
    except BudgetError as e:
        raise ValueError(f"vllm_xargs.{e}") from None
    except ValidationError as e:
        message = str(e.errors()[0]["msg"]).removeprefix("Value error, ")
        raise ValueError(f"vllm_xargs: {message}") from None


def resolve_plain_words(
    extra_args: MutableMapping[str, Any],
    thinking_token_budget: int | None = None,
    builder: PlanBuilder | None = None,
) -> None:
    """Check one request's ``vllm_xargs``; replace plain words by the ``s1_budget`` they mean.

    Raises ``ValueError`` (vLLM answers 400) for a misspelled key of ours, a bad value, plain
    words beside ``s1_budget``, and either beside vLLM's own ``thinking_token_budget``.
    Keys that are not ours are left alone. Idempotent: a second call finds ``s1_budget`` only.
    """
    ours = [key for key in extra_args if looks_like_ours(key)]
    if not ours:
        return
    try:
        check_names(ours, OUR_KEYS, "vllm_xargs", what="key")
    except TypeError as e:
        message = str(e)
        if "thinking_token_budget" in ours:
            message += "; vLLM's own thinking_token_budget is a request field, not a vllm_xargs key"
        raise ValueError(message) from None
    words = {key: extra_args[key] for key in ours if key in PLAIN_KEYS}
    if words and EXTRA_ARGS_KEY in extra_args:
        raise ValueError(
            f"vllm_xargs: {sorted(words)} and {EXTRA_ARGS_KEY} both give a budget; send one "
            f"of them ({EXTRA_ARGS_KEY} is the token-id form of the same settings)"
        )
    if thinking_token_budget is not None:
        given = sorted(words) or [EXTRA_ARGS_KEY]
        raise ValueError(
            f"thinking_token_budget: vLLM's own thinking cap and the budget in vllm_xargs "
            f"{given} were both given; send one of them (max_thinking_tokens in vllm_xargs "
            "is the cap with budget forcing)"
        )
    if not words:
        return
    budget = plain_budget(words)
    builder = builder or served_builder()
    try:
        plan = builder.plan_for(budget)
    except ValueError as e:  # BudgetError names the field
        raise ValueError(f"vllm_xargs.{e}") from None
    for key in words:
        del extra_args[key]
    extra_args[EXTRA_ARGS_KEY] = plan.to_json()
