"""Train the toy reasoner that ships with the package.

    python -m s1_integrations.toy.train --out src/s1_integrations/toy/model

Builds a byte-level BPE tokenizer with the chat and thinking special tokens, a tiny
Qwen3-architecture model (vLLM loads it natively), and trains it on addition problems written
out column by column inside ``<think> ... </think>``. Everything is seeded, so the same command
reproduces the shipped weights' quality on a 2-core CPU in well under 20 minutes.
"""

from __future__ import annotations

import argparse
import math
import random
import time
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast, Qwen3Config, Qwen3ForCausalLM

from s1_integrations.toy.problems import (
    HELDOUT_FILE,
    Problem,
    answer_text,
    extract_answer,
    heldout_problems,
    off_topic_example,
    random_problem,
    thinking_steps,
    write_heldout,
)

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>"]
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def render_prompt(question: str) -> str:
    return f"<|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\n"


def render_example(rng: random.Random, heldout: set[tuple[int, int]]) -> tuple[str, str]:
    """(prompt, completion): the completion is what the model learns to write."""
    if rng.random() < 0.06:
        question, thinking, answer = off_topic_example(rng)
    else:
        problem = random_problem(rng)
        while (problem.a, problem.b) in heldout:
            problem = random_problem(rng)
        question = problem.question
        thinking = thinking_steps(problem, check=rng.random() < 0.4)
        answer = answer_text(problem)
    return render_prompt(question), f"<think>{thinking}</think>{answer}<|im_end|>"


def build_tokenizer(rng: random.Random, vocab_size: int) -> PreTrainedTokenizerFast:
    corpus = []
    for _ in range(4000):
        prompt, completion = render_example(rng, set())
        corpus.append(prompt + completion)
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
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token=None,
        additional_special_tokens=["<|im_start|>", "<think>", "</think>"],
    )
    fast.chat_template = CHAT_TEMPLATE
    fast.model_max_length = 512
    return fast


def build_model(vocab_size: int, tokenizer: PreTrainedTokenizerFast) -> Qwen3ForCausalLM:
    config = Qwen3Config(  # type: ignore[call-arg]  # rope/dtype go through **kwargs
        vocab_size=vocab_size,
        hidden_size=128,
        intermediate_size=384,
        num_hidden_layers=4,
        num_attention_heads=2,
        num_key_value_heads=2,
        head_dim=64,  # the CPU attention kernels reject smaller heads
        max_position_embeddings=512,
        rope_theta=10000.0,
        tie_word_embeddings=True,
        torch_dtype="float32",
        eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"),
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=None,
    )
    return Qwen3ForCausalLM(config)


def make_batch(
    rng: random.Random,
    tokenizer: PreTrainedTokenizerFast,
    batch_size: int,
    heldout: set[tuple[int, int]],
) -> tuple[torch.Tensor, torch.Tensor]:
    seqs, targets = [], []
    for _ in range(batch_size):
        prompt, completion = render_example(rng, heldout)
        p = tokenizer.encode(prompt, add_special_tokens=False)
        c = tokenizer.encode(completion, add_special_tokens=False)
        seqs.append(p + c)
        targets.append([-100] * len(p) + c)
    width = max(len(s) for s in seqs)
    pad = tokenizer.pad_token_id
    ids = torch.tensor([s + [pad] * (width - len(s)) for s in seqs])
    labels = torch.tensor([t + [-100] * (width - len(t)) for t in targets])
    return ids, labels


@torch.no_grad()
def evaluate(
    model: Qwen3ForCausalLM,
    tokenizer: PreTrainedTokenizerFast,
    problems: list[Problem],
    max_new_tokens: int = 160,
) -> float:
    """Greedy accuracy with unlimited thinking (the model opens and closes its own block)."""
    model.eval()
    tokenizer.padding_side = "left"
    correct = 0
    for start in range(0, len(problems), 50):
        chunk = problems[start : start + 50]
        enc = tokenizer(
            [render_prompt(p.question) + "<think>" for p in chunk],
            return_tensors="pt",
            padding=True,
            add_special_tokens=False,
        )
        out = model.generate(  # type: ignore[misc]
            **enc,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
        for p, ids in zip(chunk, out[:, enc["input_ids"].shape[1] :], strict=True):
            text = str(tokenizer.decode(ids, skip_special_tokens=False))
            answer = text.split("</think>", 1)[1] if "</think>" in text else ""
            correct += extract_answer(answer) == p.answer
    model.train()
    return correct / len(problems)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "model")
    parser.add_argument("--steps", type=int, default=2500)
    parser.add_argument("--batch-size", type=int, default=48)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--vocab-size", type=int, default=320)
    parser.add_argument("--eval-every", type=int, default=500)
    args = parser.parse_args()

    torch.manual_seed(args.seed)
    rng = random.Random(args.seed)
    tokenizer = build_tokenizer(rng, args.vocab_size)
    model = build_model(len(tokenizer), tokenizer)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"vocab {len(tokenizer)}, parameters {n_params:,}")

    eval_set = heldout_problems()
    heldout = {(p.a, p.b) for p in eval_set}
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)
    warmup = 100

    def lr_at(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, args.steps - warmup)
        return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_at)
    started = time.monotonic()
    model.train()
    for step in range(args.steps):
        ids, labels = make_batch(rng, tokenizer, args.batch_size, heldout)
        loss = model(input_ids=ids, labels=labels).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        if step % 100 == 0:
            elapsed = time.monotonic() - started
            print(f"step {step:5d} loss {loss.item():.4f} {elapsed:6.0f}s", flush=True)
        if args.eval_every and step and step % args.eval_every == 0:
            print(f"  held-out accuracy {evaluate(model, tokenizer, eval_set[:100]):.3f}")

    accuracy = evaluate(model, tokenizer, eval_set)
    print(f"final held-out accuracy (unlimited thinking, greedy): {accuracy:.3f}")
    print(f"training time {time.monotonic() - started:.0f}s")
    args.out.mkdir(parents=True, exist_ok=True)
    model.generation_config.do_sample = False
    model.save_pretrained(args.out, safe_serialization=True)
    tokenizer.save_pretrained(args.out)
    write_heldout(args.out.parent / HELDOUT_FILE, eval_set)
    print(f"saved to {args.out}")


if __name__ == "__main__":
    main()
