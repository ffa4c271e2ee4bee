"""Evaluate one checkpoint on one benchmark: prompts -> vLLM -> grading -> records and summary, chunk by chunk."""
from __future__ import annotations

import json
import os
from typing import Callable, Optional

from .. import metrics
from ..prompts import PromptBuilder
from .benchmarks import Benchmark, Problem
from .config import GenerationConfig
from .generate import EvalGenerator
from .results import Shard, append_records, merge_records, open_run, summarize, write_atomic

PROMPT_TOO_LONG = "prompt_too_long"

# grade(benchmark, problems, completions) -> one (correct, extracted answer or program, reason) per completion
GradeFn = Callable[[Benchmark, list[Problem], list[str]], list[tuple[bool, Optional[str], str]]]


def evaluate_benchmark(benchmark: Benchmark, problems: list[Problem], prompts: PromptBuilder, generator: EvalGenerator,
                       grade: GradeFn, folder: str, run_key: dict, gen: GenerationConfig,
                       shard: Shard = Shard()) -> Optional[dict]:
    """Generate and grade `shard`'s share of the problems not graded yet in `folder`; then, once
    every shard's problems are graded, merge the records and write and return the benchmark's
    summary (None while other shards still run)."""
    name = benchmark.name if shard.count == 1 else f"{benchmark.name} ({shard})"
    done = open_run(folder, run_key, gen.num_samples, shard)
    mine = shard.share(problems)
    todo = [p for p in mine if p.id not in done]
    if len(todo) < len(mine):
        metrics.log(f"{name}: {len(mine) - len(todo)} of {len(mine)} problems already graded in {folder}")
    samples_path = shard.records_path(folder)
    bar = metrics.progress(len(todo), f"{name}", unit="problem")
    for start in range(0, len(todo), gen.problems_per_chunk):
        chunk = todo[start:start + gen.problems_per_chunk]
        prompt_texts = [prompts.render(p.text) for p in chunk]
        prompt_ids = [prompts.tokenizer(text, add_special_tokens=False)["input_ids"] for text in prompt_texts]
        outputs = generator.generate(prompt_ids)
        graded_problems, completions = [], []
        for problem, samples in zip(chunk, outputs):
            for sample in samples or []:
                graded_problems.append(problem)
                completions.append(sample.text)
        verdicts = iter(grade(benchmark, graded_problems, completions))
        records = []
        for problem, prompt_text, ids, samples in zip(chunk, prompt_texts, prompt_ids, outputs):
            for index in range(gen.num_samples):
                if samples is None:  # no room to answer within max_model_len: wrong, and counted
                    correct, extracted, reason, text, num_tokens, finish = (False, None, PROMPT_TOO_LONG, "", 0,
                                                                            PROMPT_TOO_LONG)
                else:
                    (correct, extracted, reason), sample = next(verdicts), samples[index]
                    text, num_tokens, finish = sample.text, sample.num_tokens, sample.finish_reason
                record = {"id": problem.id, "sample": index, "prompt": prompt_text, "prompt_tokens": len(ids),
                          "completion": text, "num_tokens": num_tokens, "finish_reason": finish,
                          "reference": problem.answer, "extracted": extracted, "correct": bool(correct),
                          "reason": reason}
                records.append(record)
        append_records(samples_path, records)
        bar.update(len(chunk))
    bar.close()
    return finish_benchmark(benchmark, [p.id for p in problems], folder, gen)


def finish_benchmark(benchmark: Benchmark, problem_ids: list[str], folder: str, gen: GenerationConfig) -> Optional[dict]:
    """The benchmark's summary over `problem_ids`, written to `folder`/summary.json, once all of them
    are graded (their shards' records merged into samples.jsonl); None while some are not."""
    records = merge_records(folder, problem_ids, gen.num_samples)
    if records is None:
        return None
    summary = {"benchmark": benchmark.name, "kind": benchmark.kind, **summarize(records, gen.num_samples, gen.pass_at)}
    write_atomic(os.path.join(folder, "summary.json"), json.dumps(summary, indent=1))
    return summary
