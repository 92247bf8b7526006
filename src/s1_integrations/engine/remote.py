"""A fleet of ``vllm serve`` replicas as one backend, over the OpenAI-compatible API.

The generator talks to it exactly as to the in-process engine (token-id prompts in, token ids
and log-probabilities out), so results and stream events are the same. Budget forcing runs
inside the servers when they have the plugin (this package installed beside vLLM, started with
``--logprobs-mode processed_logprobs``); otherwise the generator falls back to the rounds
strategy over ``/v1/completions``, which any vLLM server can serve.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, NamedTuple

from pydantic import BaseModel, ConfigDict, Field, field_validator

from s1_integrations.core.forcing import EXTRA_ARGS_KEY, ForcingPlan
from s1_integrations.engine.bridge import _DONE, EngineClosedError, EngineError, LoopBridge

logger = logging.getLogger(__name__)

#: Worth trying again, elsewhere: the server is overloaded, restarting or behind a balancer
#: that lost it. Everything else is the request's fault or a lasting server problem.
RETRYABLE_STATUS = frozenset({408, 429, 500, 502, 503, 504})
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
    connect_timeout_s: float = Field(default=5.0, gt=0)
    read_timeout_s: float = Field(
        default=300.0, gt=0, description="longest silence allowed between two chunks of a reply"
    )
    max_retries: int = Field(default=3, ge=0, description="per request, across servers")
    backoff_s: float = Field(default=0.5, ge=0, description="first wait; doubles each retry")
    max_backoff_s: float = Field(default=8.0, ge=0)
    down_for_s: float = Field(
        default=5.0, ge=0, description="how long a server that refused a connection is avoided"
    )
    max_connections: int = Field(default=512, ge=1)

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
        return tuple(out)


class _Logprob(NamedTuple):
    logprob: float


@dataclass
class RemoteCompletion:
    """The shape of vLLM's ``CompletionOutput`` that the generator reads."""

    token_ids: list[int]
    logprobs: list[dict[int, _Logprob]] | None
    finish_reason: str | None = None


@dataclass
class RemoteOutput:
    """The shape of vLLM's ``RequestOutput`` that the generator reads."""

    outputs: list[RemoteCompletion]
    finished: bool = False
    server: str = ""


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


def completion_body(params: Any, prompt_ids: list[int], model: str) -> dict[str, Any]:
    """A vLLM ``SamplingParams`` as a ``/v1/completions`` request with a token-id prompt."""
    body: dict[str, Any] = {
        "model": model,
        "prompt": list(prompt_ids),
        "max_tokens": params.max_tokens,
        "temperature": params.temperature,
        "top_p": params.top_p,
        "n": 1,
        "stream": True,
        "return_token_ids": True,
        "skip_special_tokens": params.skip_special_tokens,
    }
    if params.top_k and params.top_k > 0:
        body["top_k"] = params.top_k
    if params.seed is not None:
        body["seed"] = params.seed
    if params.stop:
        body["stop"] = list(params.stop)
        body["include_stop_str_in_output"] = params.include_stop_str_in_output
    if params.stop_token_ids:
        body["stop_token_ids"] = list(params.stop_token_ids)
    if params.bad_words:
        # The thinking delimiters a round may not write (the budget's no-re-entry rule when
        # the servers run rounds); the server tokenizes them as the generator does.
        body["bad_words"] = list(params.bad_words)
    if params.logprobs is not None:
        body["logprobs"] = params.logprobs
    if params.min_tokens:
        body["min_tokens"] = params.min_tokens
    if params.ignore_eos:
        body["ignore_eos"] = True
    if params.extra_args:
        # vllm_xargs carries only scalars and flat lists: the plan travels as one JSON string.
        body["vllm_xargs"] = {
            k: json.dumps(v, separators=(",", ":")) if isinstance(v, dict) else v
            for k, v in params.extra_args.items()
        }
    if params.structured_outputs is not None:
        constraint = {
            k: v
            for k, v in asdict(params.structured_outputs).items()
            if not k.startswith("_") and v not in (None, False)
        }
        # As the in-process engine does: no whitespace padding inside constrained JSON.
        if "json" in constraint or "json_object" in constraint:
            constraint.setdefault("disable_any_whitespace", True)
        body["structured_outputs"] = constraint
    return body


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
        self.model: str = card["id"]
        self.max_model_len: int = min(s.max_model_len for s in self.servers)
        self.tokenizer = _load_tokenizer(cfg.tokenizer or card.get("root") or self.model)
        await asyncio.gather(*(self._check_tokenizer(s) for s in self.servers))
        if cfg.forcing != "rounds":
            await asyncio.gather(*(self._probe_forcing(s) for s in self.servers))
        self.forcing_in_engine = cfg.forcing != "rounds" and all(s.forcing for s in self.servers)
        if cfg.forcing == "plugin" and not self.forcing_in_engine:
            lacking = [s.url for s in self.servers if not s.forcing]
            raise EngineError(
                f"{', '.join(lacking)}: no budget forcing in the server. Install "
                "s1-integrations beside vLLM there and start it with --logprobs-mode "
                "processed_logprobs, or pass forcing='auto' to fall back to rounds"
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

    async def _json(
        self, server: _Server, method: str, path: str, body: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """One small request to one server (start-up), retried on transient failures."""
        attempts = _Attempts()
        for attempt in range(self.config.max_retries + 1):
            try:
                response = await self._client.request(method, server.url + path, json=body)
                if response.status_code in RETRYABLE_STATUS:
                    raise _Retry(f"{server.url}{path}: HTTP {response.status_code}")
                _raise_for_status(server.url + path, response.status_code, response.text)
                return dict(response.json())
            except Exception as e:
                failure = self._failure(server, e)
                if not isinstance(failure, _Retry):
                    raise failure from None
                attempts.last = failure
            await self._backoff(attempt)
        raise EngineError(f"{server.url} is unreachable: {attempts.last}")

    async def _produce(
        self, prompt_ids: list[int], params: Any, emit: Callable[[Any], None]
    ) -> None:
        from vllm.sampling_params import RequestOutputKind

        body = completion_body(params, prompt_ids, self.model)
        delta = params.output_kind == RequestOutputKind.DELTA
        final_only = params.output_kind == RequestOutputKind.FINAL_ONLY
        want_logprobs = params.logprobs is not None
        attempts = _Attempts()
        try:
            for attempt in range(self.config.max_retries + 1):
                server = self._pick(attempts.tried)
                attempts.tried.append(server.url)
                server.in_flight += 1
                # Whether the caller has seen any of this attempt's output: until then a
                # failure (the server dying mid-reply included) can start over elsewhere.
                # A final-only request hands nothing on before its last chunk.
                handed_on = False
                ids: list[int] = []
                logprobs: list[dict[int, _Logprob]] = []
                try:
                    chunks = self._chunks(server, body)
                    async with contextlib.aclosing(chunks):  # closing it aborts on the server
                        async for chunk in chunks:
                            new, new_lp, finish = _parse_choice(chunk, want_logprobs)
                            ids += new
                            logprobs += new_lp
                            if final_only and finish is None:
                                continue
                            out = (
                                RemoteCompletion(new, new_lp if want_logprobs else None, finish)
                                if delta
                                else RemoteCompletion(
                                    list(ids), list(logprobs) if want_logprobs else None, finish
                                )
                            )
                            handed_on = True
                            emit(RemoteOutput([out], finish is not None, server.url))
                    return
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
                    attempts.last = failure
                finally:
                    server.in_flight -= 1
                if attempt < self.config.max_retries:
                    await self._backoff(attempt)
            raise EngineError(
                f"no server could serve the request after {len(attempts.tried)} attempts; "
                f"last: {attempts.last}"
            )
        except asyncio.CancelledError:
            # The connection is closed by now, which makes vLLM abort the request.
            if self._closed:
                emit(EngineClosedError("the engine was closed while this request was running"))
            raise
        except Exception as e:
            emit(e)
        finally:
            emit(_DONE)

    async def _chunks(self, server: _Server, body: dict[str, Any]) -> Any:
        """The server-sent events of one streamed completion, as parsed JSON."""
        url = server.url + "/v1/completions"
        async with self._client.stream("POST", url, json=body) as response:
            if response.status_code in RETRYABLE_STATUS:
                raise _Retry(f"{url}: HTTP {response.status_code}")
            if response.status_code >= 400:
                text = (await response.aread()).decode(errors="replace")
                _raise_for_status(url, response.status_code, text)
            async for line in response.aiter_lines():
                if not line.startswith("data:"):
                    continue
                payload = line[5:].strip()
                if payload == "[DONE]":
                    return
                chunk = json.loads(payload)
                if "error" in chunk:  # a streamed reply reports failures in-band
                    _raise_for_status(url, _status(chunk), json.dumps(chunk))
                yield chunk
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


def _parse_choice(
    chunk: dict[str, Any], want_logprobs: bool
) -> tuple[list[int], list[dict[int, _Logprob]], str | None]:
    choice = chunk["choices"][0]
    ids = [int(t) for t in choice.get("token_ids") or []]
    lps: list[dict[int, _Logprob]] = []
    if want_logprobs:
        values = (choice.get("logprobs") or {}).get("token_logprobs") or []
        if len(values) != len(ids):
            raise EngineError("the server returned log-probabilities that do not match tokens")
        lps = [{t: _Logprob(float(v))} for t, v in zip(ids, values, strict=True)]
    return ids, lps, choice.get("finish_reason")


def _message(payload: Any) -> str:
    error = payload.get("error", payload) if isinstance(payload, dict) else payload
    if isinstance(error, dict):
        return str(error.get("message") or error)
    return str(error)


def _status(chunk: dict[str, Any]) -> int:
    error = chunk.get("error")
    code = error.get("code") if isinstance(error, dict) else None
    return code if isinstance(code, int) and code >= 400 else 500


def _raise_for_status(url: str, status: int, text: str) -> None:
    if status < 400:
        return
    try:
        message = _message(json.loads(text))
    except ValueError:
        message = text[:500]
    if status in (400, 422):
        raise ValueError(f"{url} rejected the request: {message}")
    if status == 404:
        raise EngineError(f"{url}: not found ({message}); is it a vLLM server with this model?")
    raise EngineError(f"{url}: HTTP {status}: {message}")


def _load_tokenizer(source: str) -> Any:
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(source)
    except Exception as e:
        raise EngineError(
            f"cannot load the tokenizer {source!r} here; pass tokenizer= a local copy of the "
            f"served model's tokenizer: {e}"
        ) from e
