"""Per-call sampling options, and how they become a backend's request."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from s1_integrations.core.backend import GenerationRequest
from s1_integrations.core.numbers import Count, Real
from s1_integrations.core.schemas import check_answer_schema, check_structural_tag

#: Seeds of successive samples of one prompt lie this far apart (the rounds strategy seeds
#: round r with seed + r, so sample seeds must not meet within any realistic round count).
SAMPLE_SEED_STRIDE = 1 << 20


class SamplingOptions(BaseModel):
    """Per-call sampling; greedy by default so budgets are reproducible."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    temperature: Real = Field(default=0.0, ge=0.0)
    top_p: Real = Field(default=1.0, gt=0.0, le=1.0)
    top_k: Count | None = Field(default=None, ge=1)
    seed: Count | None = None
    stop: tuple[str, ...] = ()
    answer_schema: dict[str, Any] | None = Field(
        default=None, description="JSON schema the answer must follow (thinking stays free)."
    )

    answer_tag: dict[str, Any] | None = Field(
        default=None,
        description=(
            "Structural tag the answer follows: free text, but each block that starts with one "
            "of its triggers is held to that block's schema (free tool calls, from tools=)."
        ),
    )

    @field_validator("answer_schema", mode="before")
    @classmethod
    def _compilable(cls, schema: Any) -> Any:
        return None if schema is None else check_answer_schema(schema)

    @field_validator("answer_tag", mode="before")
    @classmethod
    def _compilable_tag(cls, tag: Any) -> Any:
        return None if tag is None else check_structural_tag(tag)

    @property
    def constrained(self) -> bool:
        """The answer is generated in its own grammar-bound request, after the thinking."""
        return self.answer_schema is not None or self.answer_tag is not None

    @classmethod
    def from_call(cls, sampling: dict[str, Any]) -> SamplingOptions:
        """The options of a call's keywords (``stop`` may be one string or None)."""
        stop = sampling.get("stop")
        if isinstance(stop, str):
            sampling = {**sampling, "stop": (stop,)}
        elif stop is None and "stop" in sampling:
            sampling = {k: v for k, v in sampling.items() if k != "stop"}
        return cls(**sampling)

    def request(
        self, prompt_ids: list[int], max_tokens: int, *, seed: int | None = None, **fields: Any
    ) -> GenerationRequest:
        """A backend request with these options (``seed`` replaces the options' own)."""
        return GenerationRequest(
            prompt_ids=prompt_ids,
            max_tokens=max_tokens,
            temperature=self.temperature,
            top_p=self.top_p,
            top_k=self.top_k,
            seed=self.seed if seed is None else seed,
            **fields,
        )


def sample_seed(seed: int | None, sample: int) -> int | None:
    """Sample ``sample``'s own seed, far enough from the others' that rounds never share one.

    Sample 0 keeps the caller's seed, so ``n=1`` and the first of ``n`` samples agree.
    """
    return seed if seed is None or sample == 0 else seed + sample * SAMPLE_SEED_STRIDE


def sample_options(options: SamplingOptions, sample: int) -> SamplingOptions:
    """The call's options with sample ``sample``'s seed (:func:`sample_seed`)."""
    seed = sample_seed(options.seed, sample)
    return options if seed == options.seed else options.model_copy(update={"seed": seed})


def signal_logprobs(options: SamplingOptions) -> int:
    """How many top log-probabilities the adaptive signal needs per token.

    Under greedy decoding the sampled token is the top-1 wherever the model chose (forced
    tokens are no evidence), so its own log-probability is enough, and vLLM skips a top-k
    over the batch at every step; a sampled token need not be the top-1.
    """
    return 0 if options.temperature == 0 else 1
