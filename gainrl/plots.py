"""Figures people look at instead of reading numbers. Rank-0 callers only."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def plot_scores(path: str, scores, prompt_tokens, title: str, spearman_length: float) -> None:
    """Score histogram and score against prompt length, side by side."""
    scores, prompt_tokens = np.asarray(scores), np.asarray(prompt_tokens)
    fig, (hist, scatter) = plt.subplots(1, 2, figsize=(11, 4))
    hist.hist(scores, bins=min(60, max(10, len(scores) // 20)), color="tab:blue")
    hist.set_xlabel("angle concentration score (C_intra + w_inter C_inter)")
    hist.set_ylabel("rows")
    hist.set_title(f"{len(scores)} rows")
    scatter.scatter(prompt_tokens, scores, s=4, alpha=0.5, color="tab:orange")
    scatter.set_xlabel("prompt tokens")
    scatter.set_ylabel("score")
    scatter.set_title(f"Spearman(score, prompt length) = {spearman_length:+.3f}")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
