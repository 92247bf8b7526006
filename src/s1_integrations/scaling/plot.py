"""The s1 paper's scaling figure: accuracy against mean thinking tokens."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any


def plot_scaling(summaries: Sequence[Any], path: Path) -> None:
    """Curves for capping the thinking and extending it with "Wait" (sequential scaling),
    for the adaptive policy (one point per threshold) and for voting over n samples (parallel
    scaling, thinking summed over the samples), where the sweep ran them."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    span = max((s.mean_thinking_tokens for s in summaries), default=1.0) or 1.0
    labelled: list[tuple[float, float]] = []
    # The legend names each kind, so a point's label is its value alone (short labels do not
    # run into each other): a cap, "+N" Waits, "xN" samples, an adaptive threshold.
    styles = {
        "cap": ("tab:blue", "o", "cap the thinking (label: cap)", "{}", (4, -10)),
        "extend": ("tab:orange", "s", "extend with Wait (label: +Waits)", "+{}", (4, -10)),
        "adaptive": ("tab:red", "D", "adaptive, Wait where unsure (label: t)", "t={:g}", (4, 6)),
        "samples": ("tab:green", "^", "majority of n samples (label: xn)", "x{}", (4, 6)),
    }
    for kind, (color, marker, name, short, offset) in styles.items():
        points = sorted(
            (
                s.mean_thinking_tokens,
                s.accuracy * 100,
                "none" if s.value is None else short.format(s.value) + _exit_suffix(s.setting),
            )
            for s in summaries
            if s.kind == kind
        )
        if not points:
            continue
        xs, ys, _ = zip(*points, strict=True)
        ax.plot(xs, ys, marker=marker, color=color, label=name)
        for x, y, label in points:
            # Points that share a place (caps past the natural length) get one label.
            if any(abs(x - lx) < 0.06 * span and abs(y - ly) < 6 for lx, ly in labelled):
                continue
            labelled.append((x, y))
            ax.annotate(label, (x, y), textcoords="offset points", xytext=offset, fontsize=7)
    parallel = any(s.kind == "samples" for s in summaries)
    ax.set_xlabel("mean thinking tokens" + (" per question, all samples" if parallel else ""))
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(-2, 106)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    ax.set_title("Test-time scaling with budget forcing")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _exit_suffix(setting: str) -> str:
    """ " exit N" for an adaptive row with an early exit (its label ends so), else ""."""
    head, sep, tail = setting.rpartition(" exit ")
    return f" exit {tail}" if sep and head.startswith("adaptive") else ""
