"""Train the toy reasoner that ships with the package.

    python -m s1_integrations.toy.train --out src/s1_integrations/toy/model

Two seeded stages on a 2-core CPU, from generated data only:

1. **base** (skipped with ``--init``): builds a byte-level BPE tokenizer with the chat and
   thinking special tokens and a tiny Qwen3-architecture model (vLLM loads it natively), and
   teaches it to add column by column inside ``<think> ... </think>``.
2. **reasoner**: fine-tunes all weights on the traces of :mod:`s1_integrations.toy.traces`
   (a fallible one-shot guess, re-examinations after forced "Wait"s, answers after a cap) inside
   the prompts of :mod:`s1_integrations.toy.contexts` (system prompts, LlamaIndex templates,
   earlier turns, tools), with a 2048-token context.

Every line of the log is printed with the elapsed time, so a run can be checked against the
time the shipped weights took (docs/toy-model.md).
"""

from __future__ import annotations

import argparse
import math
import random
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedTokenizerFast,
    Qwen3Config,
    Qwen3ForCausalLM,
)

from s1_integrations.toy import contexts, traces
from s1_integrations.toy.contexts import Example
from s1_integrations.toy.problems import (
    HELDOUT_FILE,
    Problem,
    extract_answer,
    heldout_problems,
    polish_problem,
    random_problem,
    training_problem,
    write_heldout,
)

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>"]
CHAT_TEMPLATE_FILE = Path(__file__).with_name("chat_template.jinja")
CONTEXT = 2048
#: Tokens per forward pass; a step's examples are packed into passes of about this size.
TOKENS_PER_PASS = 6144


def log(started: float, message: str) -> None:
    print(f"[{time.monotonic() - started:6.0f}s] {message}", flush=True)


# -- stage 1: tokenizer and a model that adds column by column ---------------------------


def base_example(rng: random.Random) -> Example:
    problem = random_problem(rng, 2, 4)
    return Example([{"role": "user", "content": problem.question}], traces.base_trace(rng, problem))


def build_tokenizer(rng: random.Random, vocab_size: int) -> PreTrainedTokenizerFast:
    corpus = []
    for _ in range(4000):
        ex = base_example(rng)
        prompt = f"<|im_start|>user\n{ex.messages[0]['content']}<|im_end|>\n<|im_start|>assistant\n"
        corpus.append(prompt + "<think>" + "".join(t for t, _ in ex.completion))
    tok = Tokenizer(models.BPE())
    # Digits stay single tokens, so the model sees every column of a sum the same way.
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token=None,
        additional_special_tokens=["<|im_start|>", "<think>", "</think>"],
    )


def build_model(tokenizer: PreTrainedTokenizerFast) -> Qwen3ForCausalLM:
    config = Qwen3Config(  # type: ignore[call-arg]  # rope/dtype go through **kwargs
        vocab_size=len(tokenizer),
        hidden_size=128,
        intermediate_size=384,
        num_hidden_layers=4,
        num_attention_heads=2,
        num_key_value_heads=2,
        head_dim=64,  # the CPU attention kernels reject smaller heads
        max_position_embeddings=CONTEXT,
        rope_theta=10000.0,
        tie_word_embeddings=True,
        torch_dtype="float32",
        eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"),
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=None,
    )
    return Qwen3ForCausalLM(config)


# -- data --------------------------------------------------------------------------------


class Encoder:
    """Chat examples to token ids and loss labels, the prompt rendered by the chat template."""

    def __init__(self, tokenizer: PreTrainedTokenizerFast) -> None:
        self.tokenizer = tokenizer
        self._segment_cache: dict[str, list[int]] = {}

    def ids(self, text: str) -> list[int]:
        cached = self._segment_cache.get(text)
        if cached is None:
            cached = self.tokenizer.encode(text, add_special_tokens=False)
            if len(text) < 64:
                self._segment_cache[text] = cached
        return cached

    def prompt(self, ex: Example) -> str:
        kwargs: dict[str, Any] = {"tokenize": False, "add_generation_prompt": True}
        if ex.tools:
            kwargs["tools"] = ex.tools
        text = self.tokenizer.apply_chat_template(ex.messages, **kwargs)
        return str(text) + "<think>"

    def encode(self, ex: Example) -> tuple[list[int], list[int]]:
        ids = self.ids(self.prompt(ex))
        labels = [-100] * len(ids)
        for text, learned in ex.completion:
            piece = self.ids(text)
            ids = ids + piece
            labels = labels + (piece if learned else [-100] * len(piece))
        return ids[:CONTEXT], labels[:CONTEXT]


def reasoner_example(
    rng: random.Random, heldout: set[tuple[int, int]], polish: bool = False
) -> Example:
    """Stage 2's data (or, with ``polish``, stage 3's): never a held-out problem."""
    if rng.random() < 0.04:
        return contexts.off_topic(rng)
    sample = polish_problem if polish else training_problem
    problem = sample(rng)
    while (problem.a, problem.b) in heldout:
        problem = sample(rng)
    weights = traces.POLISH_EXTENSION_WEIGHTS if polish else traces.EXTENSION_WEIGHTS
    example = contexts.example(rng, problem, weights)
    example.extra["problem"] = problem
    return example


def passes(
    encoded: list[tuple[list[int], list[int]]], pad: int
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Pack a step's examples, by length, into forward passes of about TOKENS_PER_PASS."""
    encoded = sorted(encoded, key=lambda e: len(e[0]))
    out: list[list[tuple[list[int], list[int]]]] = []
    group: list[tuple[list[int], list[int]]] = []
    for item in encoded:
        width = len(item[0])  # sorted by length: the newest item is the widest
        if group and width * (len(group) + 1) > TOKENS_PER_PASS:
            out.append(group)
            group = []
        group.append(item)
    if group:
        out.append(group)
    batches = []
    for group in out:
        width = max(len(ids) for ids, _ in group)
        ids = torch.tensor([i + [pad] * (width - len(i)) for i, _ in group])
        labels = torch.tensor([lab + [-100] * (width - len(lab)) for _, lab in group])
        batches.append((ids, labels))
    return batches


# -- evaluation --------------------------------------------------------------------------


@torch.no_grad()
def natural_accuracy(
    model: Any, encoder: Encoder, problems: list[Problem], max_new_tokens: int = 32
) -> dict[str, float]:
    """Greedy accuracy with natural thinking (no forcing), by difficulty."""
    tokenizer = encoder.tokenizer
    model.eval()
    tokenizer.padding_side = "left"
    hits: dict[str, list[bool]] = {"easy": [], "hard": []}
    for start in range(0, len(problems), 50):
        chunk = problems[start : start + 50]
        prompts = [
            encoder.prompt(Example([{"role": "user", "content": p.question}], [])) for p in chunk
        ]
        enc = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
        out = model.generate(
            **enc,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
        for p, ids in zip(chunk, out[:, enc["input_ids"].shape[1] :], strict=True):
            text = str(tokenizer.decode(ids, skip_special_tokens=False))
            answer = text.split("</think>", 1)[1] if "</think>" in text else ""
            hits[str(p.difficulty)].append(extract_answer(answer) == p.answer)
    model.train()
    return {k: sum(v) / len(v) for k, v in hits.items() if v}


# -- training ----------------------------------------------------------------------------


def train(
    model: Any,
    encoder: Encoder,
    make_example: Any,
    *,
    steps: int,
    batch_size: int,
    lr: float,
    warmup: int,
    started: float,
    label: str,
    eval_set: list[Problem],
    eval_every: int,
) -> None:
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)

    def lr_at(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, steps - warmup)
        return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_at)
    pad = encoder.tokenizer.pad_token_id
    model.train()
    for step in range(steps):
        encoded = [encoder.encode(make_example()) for _ in range(batch_size)]
        targets = sum(sum(1 for t in labels[1:] if t != -100) for _, labels in encoded)
        optimizer.zero_grad(set_to_none=True)
        total = 0.0
        for ids, labels in passes(encoded, pad):
            logits = model(input_ids=ids).logits[:, :-1]
            loss = F.cross_entropy(
                logits.reshape(-1, logits.shape[-1]),
                labels[:, 1:].reshape(-1),
                ignore_index=-100,
                reduction="sum",
            ) / max(1, targets)
            loss.backward()
            total += loss.item()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        if step % 100 == 0:
            longest = max(len(ids) for ids, _ in encoded)
            log(started, f"{label} step {step:5d} loss {total:.4f} longest {longest}")
        if eval_every and step and step % eval_every == 0:
            log(started, f"{label} natural accuracy {natural_accuracy(model, encoder, eval_set)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "model")
    parser.add_argument("--init", type=Path, default=None, help="Skip stage 1: start from here.")
    parser.add_argument("--base-steps", type=int, default=1300)
    parser.add_argument("--steps", type=int, default=2400)
    parser.add_argument("--batch-size", type=int, default=48)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--vocab-size", type=int, default=320)
    parser.add_argument("--eval-every", type=int, default=600)
    parser.add_argument("--polish-steps", type=int, default=400)
    parser.add_argument("--polish-lr", type=float, default=5e-4)
    parser.add_argument(
        "--skip-reasoner", action="store_true", help="With --init of a stage-2 model: polish only."
    )
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = random.Random(args.seed)
    started = time.monotonic()
    eval_set = heldout_problems()
    heldout = {(p.a, p.b) for p in eval_set} | {(p.b, p.a) for p in eval_set}

    tokenizer: Any
    model: Any
    if args.init is None:
        tokenizer = build_tokenizer(rng, args.vocab_size)
        tokenizer.chat_template = CHAT_TEMPLATE_FILE.read_text()
        model = build_model(tokenizer)
        encoder = Encoder(tokenizer)
        log(started, f"stage 1: vocab {len(tokenizer)}, parameters {model.num_parameters():,}")
        train(
            model,
            encoder,
            lambda: base_example(rng),
            steps=args.base_steps,
            batch_size=args.batch_size,
            lr=3e-3,
            warmup=100,
            started=started,
            label="base",
            eval_set=[],
            eval_every=0,
        )
    else:
        tokenizer = AutoTokenizer.from_pretrained(args.init)
        tokenizer.chat_template = CHAT_TEMPLATE_FILE.read_text()
        model = AutoModelForCausalLM.from_pretrained(args.init, dtype=torch.float32)
        model.config.max_position_embeddings = CONTEXT
        encoder = Encoder(tokenizer)
        log(started, f"stage 1 skipped: starting from {args.init}")
    tokenizer.model_max_length = CONTEXT

    if not args.skip_reasoner:
        log(started, f"stage 2: {model.num_parameters():,} parameters, context {CONTEXT}")
        train(
            model,
            encoder,
            lambda: reasoner_example(rng, heldout),
            steps=args.steps,
            batch_size=args.batch_size,
            lr=args.lr,
            warmup=50,
            started=started,
            label="reasoner",
            eval_set=eval_set[:100],
            eval_every=args.eval_every,
        )
        log(started, f"stage 2 natural accuracy {natural_accuracy(model, encoder, eval_set)}")
    # Stage 3: sharpen the one-shot guess (easy sums must be right thinking naturally) at a
    # lower learning rate, without forgetting the re-examinations.
    log(started, "stage 3: polishing the natural guess")
    train(
        model,
        encoder,
        lambda: reasoner_example(rng, heldout, polish=True),
        steps=args.polish_steps,
        batch_size=args.batch_size,
        lr=args.polish_lr,
        warmup=20,
        started=started,
        label="polish",
        eval_set=eval_set[:100],
        eval_every=args.eval_every,
    )
    log(started, f"final natural accuracy (greedy) {natural_accuracy(model, encoder, eval_set)}")
    args.out.mkdir(parents=True, exist_ok=True)
    model.generation_config.do_sample = False
    tokenizer.padding_side = "right"  # the evaluation pads on the left; ship the default
    model.save_pretrained(args.out, safe_serialization=True)
    tokenizer.save_pretrained(args.out)
    write_heldout(args.out.parent / HELDOUT_FILE, eval_set)
    log(started, f"saved to {args.out}")


if __name__ == "__main__":
    main()
