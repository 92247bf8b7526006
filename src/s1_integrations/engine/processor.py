"""Single-pass budget forcing inside vLLM: a V1 batch-level logits processor.

Each request carrying ``extra_args["s1_budget"]`` gets a :class:`ForcingState`; every step the
processor feeds it the newly sampled tokens and then, per row, either forces one token (all
other logits ``-inf``), or masks the thinking delimiters the model may not write now (the
start delimiter while thinking, both once the thinking has ended) and lets the model try to
stop thinking and replaces the attempt. Requests without the key cost nothing beyond a dict
lookup when they join.

On a GPU the host must not wait for the device inside a step (that would undo vLLM's
overlap of scheduling with the forward pass), so greedy rows are decided on the device and
read back with their next token, and indices travel through pinned memory, as vLLM's own
processors do; sampled rows, whose draw uses the request's own random stream, are still
decided on the host.

Most rows, most steps, are greedy rows thinking ordinary tokens, or rows answering. Where
nothing needs watching token by token (for the thinking: no soft landing, no early exit,
single-token delimiters; for the answer: no multi-token ban), such a row's new token is only
counted, and a thinking row's step's top-1 folded into an adaptive policy's signal. This
quiet lane ends at the token before the cap (the thinking's, or the answer's); the state is
given the count in one call before anything reads it, such as an attempt to stop. The
processor's work for every row at every step is what it costs beside the engine's own step.

Tokens are read in :meth:`~BudgetForcingLogitsProcessor.apply`, not in ``update_state``:
under asynchronous scheduling (vLLM's default on GPUs since 0.27) the worker's output lists
hold a ``-1`` placeholder for the token still being sampled when ``update_state`` runs, and
vLLM writes the real id in only right before sampling, and only for processors it was given
by name (``logits_processors`` / ``--logits-processors``). So this class is loaded by import
path (:data:`PROCESSOR_FQCN`), which the in-process engine and ``s1-integrations serve`` both
do. The ``vllm.logits_processors`` entry point this package installs loads
:class:`BudgetForcingPlugin`, which steps aside wherever it would run twice or could not see
the tokens.
"""

from __future__ import annotations

import logging
import math
import random
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch
from vllm import SamplingParams
from vllm.v1.sample.logits_processor import (
    BatchUpdate,
    LogitsProcessor,
    MoveDirectionality,
)

from s1_integrations.core.forcing import EXTRA_ARGS_KEY, ForcingPlan, ForcingState, Phase
from s1_integrations.engine.records import RECORD_KEY, Attempts
from s1_integrations.engine.xargs import load_effort_table, resolve_plain_words

if TYPE_CHECKING:
    from vllm.config import VllmConfig

logger = logging.getLogger(__name__)

_GREEDY_EPS = 1e-5
#: Records kept for requests nobody has taken back yet (an aborted request's stays until
#: this many newer ones push it out).
MAX_RECORDS = 1 << 16
#: Whether this process's engine asks for records (``RECORD_KEY``): only the in-process
#: engine does, and only it takes them back, so a server refuses the key from clients.
accepts_records = False


#: Dtypes NumPy holds (not bfloat16), so host logits in them can be edited through a view.
_NUMPY_DTYPES = (torch.float32, torch.float16, torch.float64)


def _host_view(logits: torch.Tensor) -> np.ndarray | None:
    """The logits as a NumPy array sharing their memory, where they are in host memory.

    A step's masks and forced tokens touch a few entries of a small array; through NumPy
    they cost a few microseconds each, single-threaded, where a torch indexing kernel costs
    tens and, on a loaded CPU, may wait for its worker threads. ``None`` on a GPU, and for
    dtypes NumPy cannot hold (bfloat16): the torch path then does the same.
    """
    if logits.device.type != "cpu" or logits.dtype not in _NUMPY_DTYPES:
        return None
    return logits.numpy()


def top1_logprobs(logits: torch.Tensor, temperatures: torch.Tensor | None = None) -> torch.Tensor:
    """Per row, the log-probability of the most likely token.

    ``log_softmax`` then ``amax``: two kernels (``logsumexp`` is several on a CPU, where each
    can wait for its threads on a loaded machine), and the very computation vLLM makes for
    the processed log-probabilities the rounds strategy reads. ``temperatures`` (one per row,
    1 for greedy) scale the logits first, so a sampled row's signal is read off the
    distribution it samples from. Masked tokens (``-inf``) carry no probability.
    """
    scaled = logits if temperatures is None else logits / temperatures.unsqueeze(1)
    return torch.log_softmax(scaled, dim=-1).amax(dim=-1)


class _Decisions:
    """Per row of one step, a value computed on the device and read back later: whether the
    row tried to stop, or (adaptive policies) the top-1 log-probability of its distribution.

    The copy to host memory is queued behind the step's kernels; it is read when the row's
    next token shows up, by which time vLLM has itself waited for that step's sampled tokens.
    The event makes the read safe without relying on that.
    """

    def __init__(self, attempts: torch.Tensor, pin_memory: bool) -> None:
        self._event: torch.cuda.Event | None = None
        self._values: list | None = None
        if attempts.device.type == "cpu":  # already on the host, and never written again
            self._host = attempts
            return
        self._host = torch.empty(attempts.shape, dtype=attempts.dtype, pin_memory=pin_memory)
        self._host.copy_(attempts, non_blocking=pin_memory)
        if attempts.is_cuda:
            self._event = torch.cuda.Event()
            self._event.record()

    def __getitem__(self, j: int) -> bool | float:
        if self._values is None:
            if self._event is not None:
                self._event.synchronize()
            self._values = self._host.tolist()
        return self._values[j]


@dataclass(frozen=True)
class Truncation:
    """A sampled request's min-p, top-k and top-p: vLLM's sampler cuts the distribution with
    them after the logits processors, so the processor's own draw must cut it the same way."""

    min_p: float = 0.0
    top_k: int = 0  # 0 (or below): none
    top_p: float = 1.0

    @classmethod
    def of(cls, params: SamplingParams) -> Truncation | None:
        """``params``' truncation, or ``None`` where the request has none."""
        cut = cls(params.min_p or 0.0, max(params.top_k or 0, 0), params.top_p)
        return None if cut == cls() else cut


def stop_probability(probs: torch.Tensor, stop_ids: Sequence[int], cut: Truncation) -> float:
    """The chance vLLM's sampler draws one of ``stop_ids`` from ``probs`` (one row, at the
    request's temperature) once ``cut`` has truncated it, in vLLM's order: min-p (an
    argmax-invariant processor), then top-k (ties with the k-th kept), then top-p (over what
    top-k kept, the smallest tokens dropped while their sum stays within 1 - p, the largest
    always kept).
    """
    keep = probs
    if cut.min_p > 0.0:
        keep = torch.where(keep >= cut.min_p * keep.max(), keep, 0.0)
    if 0 < cut.top_k < keep.numel():
        kth = torch.topk(keep, cut.top_k).values[-1]
        keep = torch.where(keep >= kth, keep, 0.0)
    if cut.top_p < 1.0:
        ordered, order = torch.sort(keep / keep.sum())
        drop = torch.cumsum(ordered, dim=0) <= 1.0 - cut.top_p
        drop[-1] = False
        keep = keep.index_fill(0, order[drop], 0.0)
    return float(keep[list(stop_ids)].sum() / keep.sum())


@dataclass
class _Request:
    state: ForcingState
    output_ids: Sequence[int]  # vLLM's live list of this request's output tokens
    consumed: int
    temperature: float
    rng: random.Random
    truncation: Truncation | None = None  # a sampled row's min-p, top-k, top-p
    decided: tuple[_Decisions, int] | None = None  # an attempt decided but not yet read
    top1: tuple[_Decisions, int] | None = None  # the step's top-1 log-probability, unread
    record: Attempts | None = None  # where asked for, each attempt replaced (records.py)
    # The record's name until the thinking has ended: its record is complete from then on.
    unsealed: str | None = None
    greedy: bool = field(init=False)  # read for every deciding row at every step
    attempt_ids: tuple[int, ...] = field(init=False)  # the plan's, read as often
    measures: bool = field(init=False)  # whether its plan reads each step's top-1
    # The quiet lane (see BudgetForcingLogitsProcessor.apply): how many more of the model's
    # ordinary tokens may only be counted, how many are counted but not yet given to the
    # state, the tokens that always go to the state, the row's bans meanwhile, and whether it
    # is thinking (and so decides every step whether the model tries to stop).
    quiet_left: int = 0
    counted: int = 0
    special: frozenset[int] = field(init=False)
    quiet_bans: tuple[int, ...] = ()
    quiet_thinking: bool = False

    def __post_init__(self) -> None:
        self.greedy = self.temperature < _GREEDY_EPS
        self.attempt_ids = self.state.plan.end_attempt_ids
        self.measures = self.state.plan.measures_top1
        self.special = self.state.plan.special | {-1}  # and vLLM's placeholder

    def settle(self) -> None:
        """Give the state the tokens the quiet lane only counted, before anyone reads it."""
        if self.counted:
            self.state.count_quiet(self.counted, self.output_ids[self.consumed - 1])
            self.counted = 0

    def end_attempt(self) -> int:
        """The state's :meth:`~ForcingState.end_attempt`, recorded where the request asks."""
        self.settle()
        self.quiet_left = 0  # something is forced next
        state = self.state
        inserted = state.inserted
        token = state.end_attempt()
        if self.record is not None:
            extended = state.inserted > inserted
            signal = state.extension_signals[-1] if extended else state.end_signal
            self.record.append((state.position, state.forcing_left, signal, False))
        return token

    def record_exit(self) -> None:
        """Record the early exit the state has just started (its first forced token is next)."""
        state = self.state
        if self.record is not None:
            self.record.append((state.position, state.forcing_left, state.end_signal, True))


class BudgetForcingLogitsProcessor(LogitsProcessor):
    """s1 budget forcing (cap, minimum, "Wait" extensions) in one engine pass."""

    def __init__(self, vllm_config: VllmConfig, device: torch.device, is_pin_memory: bool):
        self.device = device
        self.requests: dict[int, _Request] = {}
        # Whether any request in the batch reads top-1s or samples: a batch without either
        # skips those passes over its rows at every step (kept up to date on batch updates).
        self._measuring = False
        self._sampling = False
        self._id_tensors: dict[tuple[int, ...], torch.Tensor] = {}  # stop ids, built once
        self.active = True  # False: this instance leaves every request alone
        self._warned_unseen = False
        #: Per record name, the attempts replaced (``engine/records.py``).
        self.records: dict[str, Attempts] = {}
        #: Names of the records whose request has ended its thinking: complete, so they may
        #: be taken while the request still runs.
        self.sealed: set[str] = set()
        _instances.add(self)
        # On a GPU, reading the argmax back every step would make the host wait for each
        # forward pass, which defeats vLLM's asynchronous scheduling: greedy rows are decided
        # on the device instead (see _decide_on_device).
        self.decide_on_device = device.type != "cpu"
        self._pin_memory = is_pin_memory
        if vllm_config is not None:
            # An operator's effort table that does not parse stops the server at start-up,
            # not at the first request that names an effort level.
            load_effort_table()

    @classmethod
    def validate_params(cls, sampling_params: SamplingParams) -> None:
        """Refuse a bad budget with a ``ValueError`` naming it (vLLM answers HTTP 400).

        Runs in the API server before anything is scheduled. Budgets in plain words (and
        ``reasoning_effort``) are resolved here into ``s1_budget`` with the served model's
        tokenizer (``engine/xargs.py``); the engine then only ever sees token ids.
        """
        extra = sampling_params.extra_args
        if extra and RECORD_KEY in extra:
            if not accepts_records:
                raise ValueError(f"{RECORD_KEY}: set by the in-process engine only")
            if not isinstance(extra[RECORD_KEY], str):
                raise ValueError(f"{RECORD_KEY}: must be a string naming the record")
        if extra:
            resolve_plain_words(extra, sampling_params.thinking_token_budget)
        args = (extra or {}).get(EXTRA_ARGS_KEY)
        if args is None:
            return
        plan = ForcingPlan.from_extra_args(args)
        if len(plan.end) > 1 and plan.needs_forced_flags:
            raise ValueError(
                f"{EXTRA_ARGS_KEY}: extensions and early exits need a single-token end "
                "delimiter in one pass; "
                "use the rounds strategy for this model"
            )
        if sampling_params.n != 1:
            raise ValueError(f"{EXTRA_ARGS_KEY}: budget forcing supports n=1 only")
        max_tokens = sampling_params.max_tokens
        # The minimum, the end delimiter and at least one answer token must fit: below that
        # vLLM ends the request inside the thinking and the minimum is silently not honoured
        # (the in-process generator refuses the same budget against the model's context).
        needed = plan.min_thinking + len(plan.end) + 1
        if plan.min_thinking and max_tokens is not None and max_tokens < needed:
            raise ValueError(
                f"max_tokens: {max_tokens} tokens cannot hold the budget's min_thinking_tokens="
                f"{plan.min_thinking} with the end delimiter and an answer ({needed} needed); "
                "raise max_tokens or lower min_thinking_tokens"
            )
        if sampling_params.ignore_eos:
            # The budget ends the answer with an end of sequence (at its cap, or the model's
            # own), after which the processor lets the row be: vLLM would write on past it,
            # past the answer cap and the delimiter bans.
            raise ValueError(
                f"ignore_eos: the budget in {EXTRA_ARGS_KEY} ends the answer at an end of "
                "sequence, which ignore_eos would write past; drop ignore_eos"
            )

    def is_argmax_invariant(self) -> bool:
        return False  # forcing and suppression change the greedy choice

    def update_state(self, batch_update: BatchUpdate | None) -> None:
        # Only membership changes here: the newest token may still be a placeholder (see the
        # module docstring), so tokens are read in apply().
        if batch_update is not None and self.active:
            self._apply_batch_update(batch_update)

    def _apply_batch_update(self, update: BatchUpdate) -> None:
        # vLLM's order: removals, then additions (which may reuse a freed index), then moves.
        for index in update.removed:
            self.requests.pop(index, None)
        for index, params, _prompt_ids, output_ids in update.added:
            args = (params.extra_args or {}).get(EXTRA_ARGS_KEY)
            if args is None:
                self.requests.pop(index, None)
                continue
            seed = params.seed if params.seed is not None else random.getrandbits(63)
            key = (params.extra_args or {}).get(RECORD_KEY)
            self.requests[index] = _Request(
                state=ForcingState(ForcingPlan.from_extra_args(args)),
                output_ids=output_ids,
                consumed=0,
                temperature=params.temperature,
                rng=random.Random(seed),
                truncation=Truncation.of(params),
                record=self._new_record(key),
                unsealed=key,
            )
        for a, b, direction in update.moved:
            a_req = self.requests.pop(a, None)
            b_req = self.requests.pop(b, None)
            if a_req is not None:
                self.requests[b] = a_req
            if b_req is not None and direction is MoveDirectionality.SWAP:
                self.requests[a] = b_req
        if update.removed or update.added:
            requests = self.requests.values()
            self._measuring = any(r.measures for r in requests)
            self._sampling = any(not r.greedy for r in requests)

    def _new_record(self, key: str | None) -> Attempts | None:
        if key is None:
            return None
        records = self.records
        if len(records) >= MAX_RECORDS:
            oldest = next(iter(records))  # its request was never taken back
            del records[oldest]
            self.sealed.discard(oldest)
        attempts: Attempts = []
        records[key] = attempts
        return attempts

    def take_records(self, keys: Sequence[str], running: Sequence[str] = ()) -> dict[str, Attempts]:
        """The records of ``keys`` (finished requests) this instance holds, and those of
        ``running`` that are sealed (complete); forgotten here once taken."""
        found: dict[str, Attempts] = {}
        sealed = self.sealed
        for key in keys:
            attempts = self.records.pop(key, None)
            sealed.discard(key)
            if attempts is not None:
                found[key] = attempts
        for key in running:
            if key in sealed:
                sealed.discard(key)
                found[key] = self.records.pop(key)
        return found

    @staticmethod
    def _catch_up(request: _Request) -> bool:
        """Feed the state the tokens sampled since the last step; ``False`` if one is unknown."""
        request.settle()
        output_ids = request.output_ids
        while request.consumed < len(output_ids):
            token = output_ids[request.consumed]
            if token < 0:  # a placeholder vLLM has not filled in (asynchronous scheduling)
                return False
            if request.top1 is not None:  # the signal of the step that sampled this token
                values, j = request.top1
                request.top1 = None
                request.state.note_top1(math.exp(values[j]))
            if request.decided is not None:  # this token is the one decided on the device
                decisions, j = request.decided
                request.decided = None
                if decisions[j]:
                    request.end_attempt()
            request.state.observe(token)
            request.consumed += 1
        return True

    def apply(self, logits: torch.Tensor) -> torch.Tensor:
        # vLLM has written the previous step's tokens into the output lists by now.
        if not self.requests:
            return logits
        forced_rows: list[int] = []
        forced_tokens: list[int] = []
        deciding: list[tuple[int, _Request]] = []
        ban_rows: list[int] = []
        ban_tokens: list[int] = []
        # Every row, every step: kept to plain attribute reads and calls that return early.
        num_rows = logits.shape[0]
        finished, thinking = Phase.FINISHED, Phase.THINKING
        on_host = not self.decide_on_device
        for index, request in self.requests.items():
            quiet_left = request.quiet_left
            if quiet_left and index < num_rows:
                # The quiet lane: a row its state lets count (quiet_room) with nothing due
                # before its cap (a thinking row only where it is greedy and decided here),
                # whose new token is an ordinary one of the model's: the state only needs to
                # count it (settled before it is read); a thinking row decides as before.
                consumed = request.consumed
                output_ids = request.output_ids
                if len(output_ids) == consumed + 1 and output_ids[consumed] not in request.special:
                    if request.top1 is not None:  # the policy's signal at that token's step
                        values, j = request.top1
                        request.top1 = None
                        request.state.fold_top1(math.exp(values[j]))
                    request.consumed = consumed + 1
                    request.counted += 1
                    request.quiet_left = quiet_left - 1
                    bans = request.quiet_bans
                    ban_rows.extend([index] * len(bans))
                    ban_tokens.extend(bans)
                    if request.quiet_thinking:
                        deciding.append((index, request))
                    continue
            request.quiet_left = 0  # reopened below only for a row that is still quiet
            if not self._catch_up(request):
                self._unseen_token(index)
                continue
            state = request.state
            if state.phase is finished or index >= num_rows:
                continue
            token = state.pending()
            if token is not None:
                forced_rows.append(index)
                forced_tokens.append(token)
                if state.exit_at == state.position:  # the early exit starts at this token
                    request.record_exit()
                continue
            banned = state.banned_next()
            if banned:
                ban_rows.extend([index] * len(banned))
                ban_tokens.extend(banned)
            if state.phase is thinking:
                deciding.append((index, request))
                if request.greedy and on_host:  # decided from this step's argmax, here
                    request.quiet_left = state.quiet_room()
                    request.quiet_bans = banned
                    request.quiet_thinking = True
            else:  # answering: nothing to decide, only the cap and the bans
                if request.unsealed is not None:  # no attempt can be recorded from now on
                    self.sealed.add(request.unsealed)
                    request.unsealed = None
                request.quiet_left = state.quiet_room()
                request.quiet_bans = banned
                request.quiet_thinking = False
        host = _host_view(logits)
        if ban_rows:
            # Before any decision: a suppressed delimiter is no choice at all, so the attempt
            # test and the sampling both see the model's distribution without it (vLLM's
            # bad_words, which the rounds strategy uses, mask the same way).
            self._set(logits, host, ban_rows, ban_tokens, -math.inf)
        if deciding and self._measuring:
            # The adaptive policy's signal, before any decision touches a row: the rounds
            # strategy reads it off the same distribution (bans applied, stops not masked).
            self._measure(logits, deciding)
        if deciding and self.decide_on_device:
            greedy = [(i, r) for i, r in deciding if r.greedy]
            if greedy:
                self._decide_on_device(logits, greedy)
                deciding = [(i, r) for i, r in deciding if not r.greedy]
        if deciding:
            self._decide(logits, host, deciding, forced_rows, forced_tokens)
        if forced_rows:
            if host is not None:
                host[forced_rows] = -math.inf
            else:  # not logits[rows] = ...: that writes to a copy
                logits.index_fill_(0, self._to_device(forced_rows, logits.device), -math.inf)
            self._set(logits, host, forced_rows, forced_tokens, 0.0)
        return logits

    def _set(
        self,
        logits: torch.Tensor,
        host: np.ndarray | None,
        rows: list[int],
        tokens: list[int],
        value: float,
    ) -> None:
        """``logits[rows[k], tokens[k]] = value`` for every ``k``: through the host view where
        there is one (:func:`_host_view`), else with indices sent to the device."""
        if host is not None:
            host[rows, tokens] = value
            return
        device = logits.device
        logits[self._to_device(rows, device), self._to_device(tokens, device)] = value

    def _to_device(self, values: list[int], device: torch.device) -> torch.Tensor:
        """Indices for the device without waiting for it (pinned memory, as vLLM's own do)."""
        host = torch.tensor(values, dtype=torch.int64, pin_memory=self._pin_memory)
        return host.to(device, non_blocking=self._pin_memory)

    def _ids_tensor(self, ids: tuple[int, ...], device: torch.device) -> torch.Tensor:
        """A plan's stop-attempt ids on the device, built once per distinct set."""
        tensor = self._id_tensors.get(ids)
        if tensor is None:
            tensor = self._id_tensors[ids] = torch.tensor(ids, device=device)
        return tensor

    def _decide_on_device(self, logits: torch.Tensor, greedy: list[tuple[int, _Request]]) -> None:
        """Greedy rows: where the argmax tries to stop, force the replacement; read it later.

        The same outcome as :meth:`_decide` (an attempt becomes the phrase or a proper end of
        thinking, anything else is left alone) without the host reading the argmax now. Which
        rows tried is copied back behind the step and read with their next token (_catch_up),
        where the state records the attempt before observing its replacement.
        """
        device = logits.device
        by_ids: dict[tuple[int, ...], list[tuple[int, _Request]]] = {}
        for index, request in greedy:
            by_ids.setdefault(request.state.plan.end_attempt_ids, []).append((index, request))
        for attempt_ids, group in by_ids.items():
            rows = self._to_device([i for i, _ in group], device)
            replacements = self._to_device([r.state.replacement() for _, r in group], device)
            ids = self._ids_tensor(attempt_ids, device)
            sub = logits.index_select(0, rows)
            attempts = torch.isin(sub.argmax(dim=-1), ids)
            forced = torch.full_like(sub, float("-inf"))
            forced.scatter_(1, replacements.unsqueeze(1), 0.0)
            logits.index_copy_(0, rows, torch.where(attempts.unsqueeze(1), forced, sub))
            decisions = _Decisions(attempts, self._pin_memory)
            for j, (_, request) in enumerate(group):
                request.decided = (decisions, j)

    def _measure(self, logits: torch.Tensor, deciding: list[tuple[int, _Request]]) -> None:
        """Top-1 log-probabilities of the rows whose adaptive policy may still extend, or
        that may exit early.

        One vectorised pass (a max and a logsumexp) over those rows only, the whole batch
        without a gather when every row needs it; read back with the row's next token, as
        device decisions are, so a GPU never waits for it inside the step.
        """
        rows = [
            (i, r)
            for i, r in deciding
            if r.measures
            and (r.state.plan.early_exit or r.state.inserted < r.state.plan.adaptive_max)
        ]
        if not rows:
            return
        rows.sort(key=lambda item: item[0])
        if len(rows) == logits.shape[0]:  # every row, in order: no gather
            sub = logits
        else:
            sub = logits.index_select(0, self._to_device([i for i, _ in rows], logits.device))
        temps = None
        if any(not r.greedy for _, r in rows):
            temps = torch.tensor(
                [1.0 if r.greedy else r.temperature for _, r in rows],
                device=logits.device,
                dtype=sub.dtype,
            )
        values = _Decisions(top1_logprobs(sub, temps), self._pin_memory)
        for j, (_, request) in enumerate(rows):
            request.top1 = (values, j)

    def _unseen_token(self, index: int) -> None:
        """A token vLLM never filled in: acting on a stale state would force the wrong token.

        Unreachable where the processor was given by name (vLLM then fills placeholders in
        before sampling); said once, loudly, rather than corrupting the request.
        """
        if not self._warned_unseen:
            self._warned_unseen = True
            logger.error(
                "s1 budget forcing: row %d's last token is still a placeholder at sampling time,"
                " so its budget is not applied this step; load the processor with "
                "--logits-processors %s (or disable asynchronous scheduling)",
                index,
                PROCESSOR_FQCN,
            )

    def _decide(
        self,
        logits: torch.Tensor,
        host: np.ndarray | None,
        deciding: list[tuple[int, _Request]],
        forced_rows: list[int],
        forced_tokens: list[int],
    ) -> None:
        """Did each thinking request try to stop? Replace the attempt, or rule it out.

        Greedy: the attempt is the argmax, and without one the row is left alone (greedy
        sampling will not pick a token that is not the argmax, and every tensor operation saved
        is a step saved on a busy CPU). Sampling: it happens with the probability the model
        gives the stopping tokens at the request's temperature; otherwise they are masked and
        the model samples from the rest. Both match s1's "stop, strip, append Wait".
        """
        # Per step, few and cheap tensor operations: the model's own step is short on small
        # models, and on a loaded CPU every parallel kernel (a row gather, a softmax) can wait
        # milliseconds for its threads. Greedy rows need only one argmax over the batch.
        device = logits.device
        sampled = [k for k, (_, r) in enumerate(deciding) if not r.greedy] if self._sampling else []
        argmax: list[int] = []
        if len(sampled) < len(deciding):
            argmax = (host.argmax(axis=1) if host is not None else logits.argmax(dim=-1)).tolist()
        p_stop: dict[int, float] = {}
        if sampled:
            rows = self._to_device([deciding[k][0] for k in sampled], device)
            sub = logits.index_select(0, rows)
            temps = torch.tensor(
                [max(deciding[k][1].temperature, _GREEDY_EPS) for k in sampled],
                device=device,
                dtype=sub.dtype,
            ).unsqueeze(1)
            probs = torch.softmax(sub / temps, dim=-1)
            for j, k in enumerate(sampled):
                request = deciding[k][1]
                stop_ids = list(request.attempt_ids)
                if request.truncation is None:
                    p_stop[k] = float(probs[j, stop_ids].sum())
                else:
                    p_stop[k] = stop_probability(probs[j], stop_ids, request.truncation)
        mask_rows: list[int] = []
        mask_tokens: list[int] = []
        for k, (index, request) in enumerate(deciding):
            attempt_ids = request.attempt_ids
            if request.greedy:
                attempt = argmax[index] in attempt_ids
            else:
                attempt = request.rng.random() < p_stop[k]
            if attempt:
                forced_rows.append(index)
                forced_tokens.append(request.end_attempt())
            elif not request.greedy:  # a greedy row's argmax is not an attempt: nothing to mask
                mask_rows.extend([index] * len(attempt_ids))
                mask_tokens.extend(attempt_ids)
        if mask_rows:
            self._set(logits, host, mask_rows, mask_tokens, -math.inf)


_instances: weakref.WeakSet[BudgetForcingLogitsProcessor] = weakref.WeakSet()


def take_records(keys: Sequence[str], running: Sequence[str] = ()) -> dict[str, Attempts]:
    """What the active processors of this process recorded for ``keys`` (finished requests)
    and, where complete, for ``running`` (the worker's side of ``engine/records.py``); the
    records are forgotten once taken."""
    found: dict[str, Attempts] = {}
    for instance in list(_instances):
        if instance.active:
            found.update(instance.take_records(keys, running))
    return found


#: How vLLM loads the processor by name (``logits_processors=[...]``, ``--logits-processors``).
PROCESSOR_FQCN = (
    f"{BudgetForcingLogitsProcessor.__module__}:{BudgetForcingLogitsProcessor.__qualname__}"
)


class BudgetForcingPlugin(BudgetForcingLogitsProcessor):
    """What the ``vllm.logits_processors`` entry point loads into every vLLM beside this package.

    vLLM loads entry-point plugins in addition to the processors it is given by name, so where
    the processor is also named (the in-process engine, ``s1-integrations serve``) this copy
    steps aside instead of forcing every token twice. Under asynchronous scheduling with no
    processor named at all, vLLM never shows plugins the sampled tokens, so it steps aside too,
    with a warning naming the flag; a budget-aware client then finds no forcing and runs in
    rounds.
    """

    def __init__(self, vllm_config: VllmConfig, device: torch.device, is_pin_memory: bool):
        super().__init__(vllm_config, device, is_pin_memory)
        if vllm_config is None:  # driven directly (tests): nothing to step aside for
            return
        named = getattr(vllm_config.model_config, "logits_processors", None) or ()
        if any(names_processor(entry) for entry in named):
            self.active = False
            logger.debug("s1 budget forcing plugin: the processor is named; stepping aside")
        elif getattr(vllm_config.scheduler_config, "async_scheduling", False) and not named:
            # vLLM fills placeholders in only where some processor was given by name.
            self.active = False
            logger.warning(
                "s1 budget forcing is off: with asynchronous scheduling vLLM shows sampled "
                "tokens only to processors given by name; start vLLM with --logits-processors "
                "%s (s1-integrations serve does) or with --no-async-scheduling",
                PROCESSOR_FQCN,
            )


def names_processor(entry: object) -> bool:
    """Whether a ``logits_processors`` entry names the processor (by import path or class)."""
    if entry == PROCESSOR_FQCN:
        return True
    return (
        isinstance(entry, type)
        and issubclass(entry, BudgetForcingLogitsProcessor)
        and not issubclass(entry, BudgetForcingPlugin)
    )


_SPECULATIVE = (
    "vLLM runs no custom logits processors with speculative decoding (it refuses a named one "
    "and drops installed plugins without a word)"
)
_POOLING = "a pooling model samples no tokens, so no logits processor runs"
_RUNNER_V2 = (
    "vLLM's model runner V2 (its default on GPUs with Triton) loads only processors written "
    "for its own interface, and this one implements the V1 interface; set "
    "VLLM_USE_V2_MODEL_RUNNER=0"
)


class ProcessorSkippedError(ValueError):
    """An engine setting under which vLLM would not run the budget-forcing processor.

    Budgets would then be silently ignored (or the engine would fail deep inside vLLM), so
    the setting is refused before anything starts. ``setting`` names it.
    """

    def __init__(self, setting: str, why: str) -> None:
        super().__init__(
            f"{setting}: {why}; budget forcing needs vLLM to run its logits processor, so this "
            "engine setting is refused rather than have budgets silently ignored"
        )
        self.setting = setting


def refuse_engine_args_without_processors(engine_args: dict[str, object]) -> None:
    """Refuse, from the arguments (and vLLM's environment), settings that rule it out.

    Checked before vLLM parses anything, so the refusal names the setting even where vLLM
    would fail on it for another reason first (a draft model it cannot load, or Model Runner
    V2 without Triton, as on the CPU).
    """
    if engine_args.get("speculative_config") is not None:
        raise ProcessorSkippedError("speculative_config", _SPECULATIVE)
    if engine_args.get("runner") == "pooling":
        raise ProcessorSkippedError("runner", _POOLING)
    import vllm.envs

    if vllm.envs.VLLM_USE_V2_MODEL_RUNNER:  # asked for outright (vLLM may also choose it)
        raise ProcessorSkippedError("VLLM_USE_V2_MODEL_RUNNER", _RUNNER_V2)


def refuse_config_without_processors(vllm_config: object, *, on_tpu: bool) -> None:
    """Refuse a resolved vLLM configuration under which this processor would not run.

    Read off vLLM 0.32's own code: ``build_logitsprocs`` returns no custom processors for
    pooling models and with speculative decoding; ``_load_custom_logitsprocs`` returns none
    on TPU; and the V2 model runner (vLLM's default on GPUs with Triton) loads only processors
    written for its own interface, which this V1 processor is not.
    """
    if getattr(vllm_config, "speculative_config", None) is not None:
        raise ProcessorSkippedError("speculative_config", _SPECULATIVE)
    model_config = getattr(vllm_config, "model_config", None)
    if getattr(model_config, "runner_type", None) == "pooling":
        raise ProcessorSkippedError("runner", _POOLING)
    if on_tpu:
        raise ProcessorSkippedError(
            "platform", "vLLM on TPU loads no custom logits processors (it drops them silently)"
        )
    if getattr(vllm_config, "use_v2_model_runner", False):
        raise ProcessorSkippedError("VLLM_USE_V2_MODEL_RUNNER", _RUNNER_V2)
