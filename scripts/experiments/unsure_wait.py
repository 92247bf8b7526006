"""Would a "Wait" at the first unsure thinking token beat the adaptive policy on the toy?

The adaptive policy decides at the model's attempt to end its thinking. This experiment
tries the other place it could act: the first step at which the model's top-1 probability
falls below the threshold. There the model's token is dropped and "Wait" put in its place
(then the model goes on, and ends its thinking itself). Plain vLLM, greedy, float32, the
200 held-out problems; it prints accuracy and mean thinking tokens per difficulty, the
figures docs/adaptive.md compares with the policy's.

    python scripts/experiments/unsure_wait.py [--threshold 0.45]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
from collections import defaultdict


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threshold", type=float, default=0.45)
    args = parser.parse_args()
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")
    from transformers import AutoTokenizer
    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt

    from s1_integrations import heldout_path, toy_model_path

    path = str(toy_model_path())
    tok = AutoTokenizer.from_pretrained(path)
    llm = LLM(path, dtype="float32", max_model_len=2048, seed=0, kv_cache_memory_bytes=1 << 28)
    with open(heldout_path(), encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    (end,) = tok.encode("</think>", add_special_tokens=False)
    wait = tok.encode("Wait", add_special_tokens=False)
    prompts = [
        tok.encode(
            str(
                tok.apply_chat_template(
                    [{"role": "user", "content": r["question"]}],
                    tokenize=False,
                    add_generation_prompt=True,
                )
            )
            + "<think>",
            add_special_tokens=False,
        )
        for r in rows
    ]
    natural = llm.generate(
        [TokensPrompt(prompt_token_ids=p) for p in prompts],
        SamplingParams(
            temperature=0,
            max_tokens=64,
            logprobs=1,
            stop_token_ids=[end],
            include_stop_str_in_output=True,
        ),
        use_tqdm=False,
    )
    prefixes, cut = [], []
    for out in natural:
        ids = list(out.outputs[0].token_ids)
        top1 = [
            max(math.exp(v.logprob) for v in lp.values()) for lp in out.outputs[0].logprobs or []
        ]
        k = next((i for i, t in enumerate(top1) if t < args.threshold and ids[i] != end), None)
        cut.append(k)
        prefixes.append(ids if k is None else ids[:k] + wait)
    rest = llm.generate(
        [TokensPrompt(prompt_token_ids=p + x) for p, x in zip(prompts, prefixes, strict=True)],
        SamplingParams(temperature=0, max_tokens=512),
        use_tqdm=False,
    )
    stats: dict[str, list[float]] = defaultdict(lambda: [0, 0, 0.0, 0])
    for r, x, out, k in zip(rows, prefixes, rest, cut, strict=True):
        ids = x + list(out.outputs[0].token_ids)
        thinking = ids.index(end) if end in ids else len(ids)
        answers = re.findall(r"answer is (-?\d+)", str(tok.decode(ids[thinking:])))
        s = stats[r["difficulty"]]
        s[0] += 1
        s[1] += bool(answers) and answers[-1] == r["answer"]
        s[2] += thinking
        s[3] += k is not None
    print(f"threshold {args.threshold}: a Wait in place of the first token below it")
    print(f"{'set':<6}{'n':>5}{'accuracy':>10}{'mean thinking':>15}{'Waits':>7}")
    total = [0.0, 0.0, 0.0, 0.0]
    for name, s in sorted(stats.items()):
        total = [a + b for a, b in zip(total, s, strict=True)]
        print(f"{name:<6}{s[0]:>5}{s[1] / s[0]:>10.1%}{s[2] / s[0]:>15.1f}{s[3] / s[0]:>7.2f}")
    n = total[0]
    print(f"{'all':<6}{n:>5.0f}{total[1] / n:>10.1%}{total[2] / n:>15.1f}{total[3] / n:>7.2f}")


if __name__ == "__main__":
    main()
