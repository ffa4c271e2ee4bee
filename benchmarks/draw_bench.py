"""CPU benchmark of rank 0's per-epoch work in the sampler at scale: draw B of N rows, take an extra draw
(dynamic sampling), and record a step's outcomes, for every schedule and filter.

    .venv/bin/python benchmarks/draw_bench.py [--rows 40000] [--per-epoch 1024] [--repeats 50]

Each line: the median of `repeats` timed calls (after 3 warm-up calls), and its ratio to the baseline
measured in the same process, numpy's `Generator.choice(N, B, replace=False)` (what a uniform subset
costs at the least). The store holds outcomes of N / 2 rows (a run well under way; the skip filter then
has coins to throw). The last line is `draw_ms_max=X rows=N` (the slowest schedule's draw).
"""
import argparse
import statistics
import time

import numpy as np

from gainrl.config import SamplerConfig
from gainrl.sampler import Outcomes, build_sampler

SCHEDULES = {
    "uniform": SamplerConfig(schedule="uniform"),
    "gaussian": SamplerConfig(schedule="gaussian", order="score", units="fraction", sigma=0.35, n=0.2, adj_max=0.2,
                              mu0=0.3),
    "learnability": SamplerConfig(schedule="learnability"),
    "uniform + skip": SamplerConfig(schedule="uniform", skip_zero_variance=True),
    "gaussian + skip": SamplerConfig(schedule="gaussian", order="score", units="fraction", sigma=0.35, n=0.2,
                                     adj_max=0.2, mu0=0.3, skip_zero_variance=True),
}


def median_ms(call, repeats: int) -> float:
    for _ in range(3):
        call()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def outcomes_of(rows: np.ndarray, rng: np.random.Generator, group_size: int = 8) -> Outcomes:
    correct = rng.integers(0, group_size + 1, len(rows))
    p = correct / group_size
    return Outcomes(rows, np.full(len(rows), group_size), correct, rng.integers(100, 3000, len(rows)), p * (1 - p))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=40000)
    parser.add_argument("--per-epoch", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=50)
    args = parser.parse_args()
    n, b = args.rows, args.per_epoch
    rng = np.random.default_rng(0)
    columns = {"score": rng.random(n).tolist()}
    baseline_rng = np.random.default_rng(1)
    baseline = median_ms(lambda: baseline_rng.choice(n, size=b, replace=False), args.repeats)
    print(f"N = {n} rows, B = {b} per epoch, median of {args.repeats}; baseline Generator.choice: {baseline:.2f} ms")
    print(f"{'schedule':18s} {'draw ms':>8s} {'x base':>7s} {'extra ms':>9s} {'observe ms':>11s}")
    slowest = 0.0
    for name, cfg in SCHEDULES.items():
        cfg.prompts_per_epoch = b
        sampler = build_sampler(cfg, columns, n, seed=0)
        seen = rng.permutation(n)[: n // 2]
        for chunk in np.array_split(seen, max(1, len(seen) // b)):
            sampler.observe(outcomes_of(chunk, rng))
        draw = median_ms(sampler.draw, args.repeats)
        taken = sampler.draw()
        extra = median_ms(lambda: sampler.draw_more(b // 4, taken), args.repeats)
        step_rows = rng.permutation(n)[:b]
        observe = median_ms(lambda: sampler.observe(outcomes_of(step_rows, rng)), args.repeats)
        slowest = max(slowest, draw)
        print(f"{name:18s} {draw:8.2f} {draw / baseline:7.1f} {extra:9.2f} {observe:11.2f}")
    print(f"draw_ms_max={slowest:.2f} rows={n}")


if __name__ == "__main__":
    main()
