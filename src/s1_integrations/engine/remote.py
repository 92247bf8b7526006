"""A fleet of ``vllm serve`` replicas as one backend: connect, balance, retry.

The generator talks to it exactly as to the in-process engine (token-id prompts in, token ids
and log-probabilities out), so results and stream events are the same. Budget forcing runs
inside the servers when they have the processor (``s1-integrations serve``, or ``vllm serve``
with this package installed, ``--logits-processors`` naming the processor and
``--logprobs-mode processed_logprobs``); otherwise the generator falls back to the rounds
strategy over ``/v1/completions``, which any vLLM server can serve. The wire format itself
(request bodies, server-sent events, errors) is ``wire.py``; nothing here needs vLLM.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from s1_integrations.core.backend import Chunk, GenerationRequest
from s1_integrations.core.forcing import EXTRA_ARGS_KEY, ForcingPlan
from s1_integrations.core.numbers import Count, Real
from s1_integrations.engine.bridge import _DONE, EngineError, LoopBridge
from s1_integrations.engine.wire import (
    DONE,
    RETRYABLE_STATUS,
    completion_body,
    extend,
    parse_choice,
    raise_for_status,
    read_event,
)

logger = logging.getLogger(__name__)
T = TypeVar("T")

#: Text whose tokenization every server must agree on with the local tokenizer.
TOKENIZER_PROBE = "Let me think. Wait, 12 + 34 = 46.\n</think>\n\nThe answer is 46."


class RemoteConfig(BaseModel):
    """How to reach the servers and how hard to try."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    base_urls: tuple[str, ...] = Field(min_length=1, description="e.g. http://10.0.0.5:8000")
    model: str | None = Field(
        default=None, description="served model name; None takes the one model the servers serve"
    )
    tokenizer: str | None = Field(
        default=None,
        description="local tokenizer (path or hub name); None loads the served model's root",
    )
    api_key: str | None = None
    forcing: Literal["auto", "plugin", "rounds"] = Field(
        default="auto",
        description="'plugin' requires the servers' budget-forcing plugin, 'rounds' never uses it",
    )
    connect_timeout_s: Real = Field(default=5.0, gt=0)
    read_timeout_s: Real = Field(
        default=300.0, gt=0, description="longest silence allowed between two chunks of a reply"
    )
    max_retries: Count = Field(default=3, ge=0, description="per request, across servers")
    backoff_s: Real = Field(default=0.5, ge=0, description="first wait; doubles each retry")
    max_backoff_s: Real = Field(default=8.0, ge=0)
    down_for_s: Real = Field(
        default=5.0, ge=0, description="how long a server that refused a connection is avoided"
    )
    max_connections: Count = Field(default=512, ge=1)

    @field_validator("base_urls", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return (value,) if isinstance(value, str) else value

    @field_validator("base_urls")
    @classmethod
    def _normalise(cls, urls: tuple[str, ...]) -> tuple[str, ...]:
        out = []
        for url in urls:
            if not url.startswith(("http://", "https://")):
                raise ValueError(f"{url!r} is not an http(s) URL")
            url = url.rstrip("/")
            out.append(url[: -len("/v1")] if url.endswith("/v1") else url)
        twice = sorted({url for url in out if out.count(url) > 1})
        if twice:  # it would take a double share of requests, and retries would go back to it
            raise ValueError(f"{', '.join(twice)} given twice; give each server once")
        return tuple(out)

    @model_validator(mode="after")
    def _backoff_within_its_cap(self) -> RemoteConfig:
        if self.backoff_s > self.max_backoff_s:
            raise ValueError(
                f"backoff_s {self.backoff_s:g} exceeds max_backoff_s {self.max_backoff_s:g}, "
                "which would cut every wait to the cap"
            )
        return self


@dataclass
class _Server:
    url: str
    in_flight: int = 0
    down_until: float = 0.0
    forcing: bool = False
    max_model_len: int = 0
    #: Attempts that failed here before any of their output was handed on, so that the
    #: request could start over on another server (connection refused, a 5xx, the server
    #: dying before the caller saw anything).
    failed_over: int = 0
    #: Requests that failed here after part of their output was handed on: those cannot be
    #: resumed elsewhere, so their callers got an EngineError.
    broken: int = 0


class _Retry(Exception):
    """A failure after which the same request may go to a server again."""


@dataclass
class _Attempts:
    tried: list[str] = field(default_factory=list)
    last: BaseException | None = None


class RemoteEngine(LoopBridge):
    """One or more vLLM servers behind the generator's engine interface.

    Requests go to the server with the fewest of our requests in flight; a server that refuses
    connections is avoided for ``down_for_s``. A request that fails before any of its output
    was handed on to its caller (connection refused, 429/5xx, timeout, the server dying
    mid-reply under a final-only request) starts over, with exponential backoff, on another
    server; one that breaks after part of its output was handed on (a stream) fails with
    :class:`EngineError`, since that output cannot be taken back.
    """

    def __init__(self, base_urls: str | Sequence[str], **config: Any) -> None:
        urls = (base_urls,) if isinstance(base_urls, str) else tuple(base_urls)
        self.config = RemoteConfig(base_urls=urls, **config)
        self.servers = [_Server(url) for url in self.config.base_urls]
        # The Backend contract's figures, known once every server has been asked (_connect).
        self.model = ""
        self.tokenizer: Any = None
        self.max_model_len = 0
        self.forcing_in_engine = False
        self.logprobs_mode = "unknown"
        #: A server reports only the sampled token's log-probability, not the step's top-1.
        self.reports_top1 = False
        #: Forced tokens are told from their log-probabilities (a server keeps no records).
        self.records_forcing = False
        self.max_num_seqs: int | None = None  # the servers' own limits are theirs to apply
        self.seeds_ok = True
        super().__init__("s1-remote-engine")
        self._client: Any = None
        try:
            self._call(self._connect())
        except BaseException:
            self._end_calls()
            self._call(self._close_client())
            self._stop_loop()
            raise

    # -- start-up -------------------------------------------------------------------------

    async def _connect(self) -> None:
        import httpx

        cfg = self.config
        headers = {"Authorization": f"Bearer {cfg.api_key}"} if cfg.api_key else {}
        self._client = httpx.AsyncClient(
            headers=headers,
            timeout=httpx.Timeout(cfg.read_timeout_s, connect=cfg.connect_timeout_s),
            limits=httpx.Limits(max_connections=cfg.max_connections),
        )
        cards = await asyncio.gather(*(self._model_card(s) for s in self.servers))
        names = {card["id"] for card in cards}
        if len(names) > 1:
            raise EngineError(f"the servers serve different models: {sorted(names)}")
        card = cards[0]
        self.model = card["id"]
        self.max_model_len = min(s.max_model_len for s in self.servers)
        self.tokenizer = _load_tokenizer(cfg.tokenizer or card.get("root") or self.model)
        await asyncio.gather(*(self._check_tokenizer(s) for s in self.servers))
        if cfg.forcing != "rounds":
            await asyncio.gather(*(self._probe_forcing(s) for s in self.servers))
        self.forcing_in_engine = cfg.forcing != "rounds" and all(s.forcing for s in self.servers)
        if cfg.forcing == "plugin" and not self.forcing_in_engine:
            lacking = [s.url for s in self.servers if not s.forcing]
            raise EngineError(
                f"{', '.join(lacking)}: no budget forcing in the server. Start it with "
                "`s1-integrations serve`, or install s1-integrations beside vLLM there and "
                "give `vllm serve` the processor with --logits-processors and --logprobs-mode "
                "processed_logprobs (docs/scaling-out.md); or pass forcing='auto' to fall back "
                "to rounds"
            )
        if not self.forcing_in_engine and cfg.forcing == "auto":
            logger.warning(
                "budget forcing runs in rounds: %s lack the server plugin",
                ", ".join(s.url for s in self.servers if not s.forcing),
            )
        #: Forced tokens are recognised by a processed log-probability of 0 (single pass only).
        self.logprobs_mode = "processed_logprobs" if self.forcing_in_engine else "unknown"

    async def _model_card(self, server: _Server) -> dict[str, Any]:
        data = await self._json(server, "GET", "/v1/models")
        cards = data.get("data") or []
        ids = [c.get("id") for c in cards]
        wanted = self.config.model
        if wanted is None:
            if len(cards) != 1:
                raise EngineError(f"{server.url} serves {ids}: pass model= to pick one")
            card = cards[0]
        else:
            matches = [c for c in cards if wanted in (c.get("id"), c.get("root"))]
            if not matches:
                raise EngineError(f"model mismatch: {server.url} serves {ids}, not {wanted!r}")
            card = matches[0]
        server.max_model_len = int(card.get("max_model_len") or 0)
        if server.max_model_len <= 0:
            raise EngineError(f"{server.url} does not report max_model_len: is it vLLM?")
        return dict(card)

    async def _check_tokenizer(self, server: _Server) -> None:
        """Prompts go as token ids, so the local tokenizer must be the server's."""
        data = await self._json(
            server,
            "POST",
            "/tokenize",
            {"model": self.model, "prompt": TOKENIZER_PROBE, "add_special_tokens": False},
        )
        theirs = list(data.get("tokens") or [])
        ours = list(self.tokenizer.encode(TOKENIZER_PROBE, add_special_tokens=False))
        if theirs != ours:
            raise EngineError(
                f"tokenizer mismatch: {server.url} tokenizes differently from the local "
                "tokenizer; pass tokenizer= the served model's"
            )

    async def _probe_forcing(self, server: _Server) -> None:
        """Ask the server to force three arbitrary tokens at once: only the plugin can.

        They must come back exactly, each with a processed log-probability of exactly 0,
        which is also how the generator later tells forced tokens apart.
        """
        ours = self.tokenizer.encode(TOKENIZER_PROBE, add_special_tokens=False)
        forced = [ours[3], ours[1], ours[5]]
        eos = self.tokenizer.eos_token_id
        plan = ForcingPlan(
            end=tuple(forced), eos=(eos if eos is not None else ours[0],), max_thinking=0
        )
        body = {
            "model": self.model,
            "prompt": ours[:4],
            "max_tokens": len(forced),
            "temperature": 0.0,
            "logprobs": 0,
            "return_token_ids": True,
            "vllm_xargs": {EXTRA_ARGS_KEY: plan.to_json()},
        }
        choice = (await self._json(server, "POST", "/v1/completions", body))["choices"][0]
        logprobs = (choice.get("logprobs") or {}).get("token_logprobs") or []
        server.forcing = choice.get("token_ids") == forced and all(lp == 0.0 for lp in logprobs)
        if choice.get("token_ids") == forced and not server.forcing:
            logger.warning(
                "%s has the plugin but not --logprobs-mode processed_logprobs", server.url
            )

    # -- requests -------------------------------------------------------------------------

    def _pick(self, tried: list[str]) -> _Server:
        now = time.monotonic()
        fresh = [s for s in self.servers if s.url not in tried] or self.servers
        up = [s for s in fresh if s.down_until <= now] or fresh
        least = min(s.in_flight for s in up)
        return random.choice([s for s in up if s.in_flight == least])

    async def _backoff(self, attempt: int) -> None:
        cfg = self.config
        await asyncio.sleep(min(cfg.max_backoff_s, cfg.backoff_s * 2**attempt))

    def _failure(self, server: _Server, e: BaseException) -> BaseException:
        """Classify a transport failure: retry it elsewhere, or fail the request clearly."""
        import httpx

        if isinstance(e, (httpx.ConnectError, httpx.ConnectTimeout)):
            server.down_until = time.monotonic() + self.config.down_for_s
            return _Retry(f"{server.url}: cannot connect ({e!r})")
        if isinstance(e, (httpx.ReadTimeout, httpx.PoolTimeout)):
            return _Retry(f"{server.url}: no reply within {self.config.read_timeout_s} s")
        if isinstance(e, httpx.HTTPError):
            return _Retry(f"{server.url}: {e!r}")
        return e

    async def _retrying(
        self,
        once: Callable[[_Server], Awaitable[T]],
        pick: Callable[[list[str]], _Server],
        give_up: Callable[[_Attempts], str],
    ) -> T:
        """``once`` on a server ``pick`` chooses, until it succeeds or the retries run out.

        ``once`` raises :class:`_Retry` for a failure worth another attempt (after an
        exponential backoff), anything else to fail at once.
        """
        attempts = _Attempts()
        for attempt in range(self.config.max_retries + 1):
            server = pick(attempts.tried)
            attempts.tried.append(server.url)
            try:
                return await once(server)
            except _Retry as e:
                attempts.last = e
            if attempt < self.config.max_retries:
                await self._backoff(attempt)
        raise EngineError(give_up(attempts))

    async def _json(
        self, server: _Server, method: str, path: str, body: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """One small request to one server (start-up), retried on transient failures."""

        async def once(target: _Server) -> dict[str, Any]:
            try:
                response = await self._client.request(method, target.url + path, json=body)
                if response.status_code in RETRYABLE_STATUS:
                    raise _Retry(f"{target.url}{path}: HTTP {response.status_code}")
                raise_for_status(target.url + path, response.status_code, response.text)
                return dict(response.json())
            except Exception as e:
                raise self._failure(target, e) from None

        return await self._retrying(
            once, lambda _: server, lambda a: f"{server.url} is unreachable: {a.last}"
        )

    def stream(self, request: GenerationRequest) -> AsyncIterator[Chunk]:
        """One request's output as the core's chunks (the :class:`Backend` contract)."""
        if request.attempts:
            raise ValueError("attempts: servers keep no forcing records; ask for logprobs")
        return self._bridged(request)

    async def _produce(self, request: GenerationRequest, *, emit: Callable[[Any], None]) -> None:
        body = completion_body(request, self.model)

        async def once(server: _Server) -> None:
            server.in_flight += 1
            # Whether the caller has seen any of this attempt's output: until then a failure
            # (the server dying mid-reply included) can start over elsewhere. A final-only
            # request hands nothing on before its last chunk.
            handed_on = False
            whole = Chunk([], [] if request.logprobs is not None else None)
            try:
                events = self._events(server, body)
                async with contextlib.aclosing(events):  # closing it aborts on the server
                    async for event in events:
                        chunk = parse_choice(event, request)
                        if not request.deltas:  # final-only: one chunk at the end
                            extend(whole, chunk)
                            if chunk.finish_reason is None:
                                continue
                            chunk = whole
                        handed_on = True
                        emit(chunk)
            except Exception as e:
                failure = self._failure(server, e)
                if not isinstance(failure, _Retry):
                    raise failure from None
                if handed_on:
                    server.broken += 1
                    raise EngineError(
                        f"{failure!s} after part of the reply was handed on; "
                        "the request cannot be resumed"
                    ) from None
                server.failed_over += 1
                raise failure from None
            finally:
                server.in_flight -= 1

        try:
            await self._retrying(
                once,
                self._pick,
                lambda a: (
                    f"no server could serve the request after {len(a.tried)} attempts; "
                    f"last: {a.last}"
                ),
            )
        except asyncio.CancelledError:
            # The connection is closed by now, which makes vLLM abort the request. The caller
            # is told, unless it is the one that left (then nobody reads this).
            emit(self._cancelled())
            raise
        except Exception as e:
            emit(e)
        finally:
            emit(_DONE)

    async def _events(self, server: _Server, body: dict[str, Any]) -> AsyncGenerator[Any, None]:
        """The server-sent events of one streamed completion, as parsed JSON."""
        url = server.url + "/v1/completions"
        async with self._client.stream("POST", url, json=body) as response:
            if response.status_code in RETRYABLE_STATUS:
                raise _Retry(f"{url}: HTTP {response.status_code}")
            if response.status_code >= 400:
                text = (await response.aread()).decode(errors="replace")
                raise_for_status(url, response.status_code, text)
            async for line in response.aiter_lines():
                event = read_event(url, line)
                if event == DONE:
                    return
                if event is not None:
                    yield event
        # A reply cut off cleanly (a proxy, a server going away): like a dropped connection.
        raise _Retry(f"{url}: the reply ended without [DONE]")

    def num_unfinished_requests(self) -> int:
        """Requests of this process in flight on the servers (they may serve others too)."""
        self._check_alive()
        return sum(s.in_flight for s in self.servers)

    # -- lifecycle ------------------------------------------------------------------------

    async def _close_client(self) -> None:
        if self._client is not None:
            await self._client.aclose()

    def close(self) -> None:
        """End every call in flight (each caller gets EngineClosedError), then disconnect."""
        if self._closed:
            return
        self._end_calls()
        try:
            self._call(self._close_client())
        finally:
            self._stop_loop()

    def __enter__(self) -> RemoteEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _load_tokenizer(source: str) -> Any:
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(source)
    except Exception as e:
        raise EngineError(
            f"cannot load the tokenizer {source!r} here; pass tokenizer= a local copy of the "
            f"served model's tokenizer: {e}"
        ) from e
