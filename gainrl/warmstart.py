"""Supervised warm start: teach a small model the answer format before GRPO, cached on disk.

A random-weight model never writes a correct `\\boxed{}` answer, so GRPO would see only
zero rewards. This fine-tunes it (one process, AdamW) on the training prompts exactly as
training builds them (chat template, system prompt, one-shot exchange, generation prompt),
each followed by a short target response and the end-of-turn token, with the loss on the
response tokens only. It stops once the model would sample the target response on about
`target_accuracy` of the rows, so that GRPO starts with rewards well between 0 and 1.
The result is a normal model folder plus `gainrl_warmstart.json` recording everything that
determined it; the same inputs again return the folder at once.

    python -m gainrl.warmstart --base runs/models/tiny --data data/arith/train.jsonl --out runs/models/tiny-warm
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import sys
import time
from dataclasses import asdict
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException
from transformers import AutoModelForCausalLM, AutoTokenizer

from .config import DataConfig, PromptConfig
from .data import load_rows
from .models import checkpoint_fingerprint, pad_token_id
from .prompts import PromptBuilder
from .tiny_model import save_model_folder

MARKER = "gainrl_warmstart.json"
RESPONSE_TEMPLATE = "The answer is \\boxed{{{answer}}}."
# Tuned on the arithmetic task's default 512 training rows (gainrl.tasks.arithmetic): the
# default TinyModelConfig (140k parameters) stops by the target after ~1000 steps (~20 s on
# 2 CPU cores); a hidden-128, 4-head (2 KV) one (430k) after 950-1650 steps (~45-75 s).
# Either then samples ~0.4 correct on those rows.
DEFAULT_STEPS = 2000
DEFAULT_LR = 3e-3
DEFAULT_BATCH_SIZE = 32
# Stop once the training batches' expected temperature-1 accuracy reaches this (averaged over
# the last ACCURACY_WINDOW_STEPS batches, each measured before its update, so it lags a little):
# GRPO then starts with rewards well between 0 and 1. Training for a fixed number of steps
# instead lands anywhere from 0.1 to 0.7 depending on the seed.
DEFAULT_TARGET_ACCURACY = 0.35
ACCURACY_WINDOW_STEPS = 20
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja")


def rows_hash(pairs: Sequence[tuple[str, str]]) -> str:
    return hashlib.sha256(json.dumps(list(pairs), ensure_ascii=False).encode()).hexdigest()


def tokenizer_hash(model_dir: str) -> str:
    digest = hashlib.sha256()
    for name in TOKENIZER_FILES:
        path = os.path.join(model_dir, name)
        if os.path.isfile(path):
            with open(path, "rb") as f:
                digest.update(name.encode() + b":" + f.read())
    return digest.hexdigest()


def problem_answer_pairs(rows) -> list[tuple[str, str]]:
    """(problem, answer) of each row; rows are dicts (gainrl.tasks) or gainrl.data.Row."""
    return [(row["problem"], str(row["answer"])) if isinstance(row, dict) else (row.problem, row.answer)
            for row in rows]


def _field(row, name: str):
    value = row.get(name) if isinstance(row, dict) else row.fields.get(name)
    if not isinstance(value, str) or not value.strip():
        row_id = row.get("id") if isinstance(row, dict) else row.id
        raise ValueError(f"warm start: row {row_id!r} has no text in its response field {name!r}")
    return value


def problem_response_pairs(rows, response_template: str = RESPONSE_TEMPLATE,
                           response_field: Optional[str] = None) -> list[tuple[str, str]]:
    """(problem, target response) of each row: the row's `response_field` (a worked solution)
    where given, else `response_template` filled with the row's answer."""
    if response_field is not None:
        return [(problem, _field(row, response_field)) for row, (problem, _) in zip(rows, problem_answer_pairs(rows))]
    return [(problem, response_template.format(answer=answer)) for problem, answer in problem_answer_pairs(rows)]


def build_examples(tokenizer, pairs: Sequence[tuple[str, str]],
                   prompt_cfg: PromptConfig) -> list[tuple[list[int], list[int]]]:
    """(prompt ids as training builds them, response ids ending with the eos token) per
    (problem, response) pair."""
    if tokenizer.eos_token_id is None:
        raise ValueError(f"tokenizer {tokenizer.name_or_path!r} has no eos token to end the response with")
    builder = PromptBuilder(tokenizer, prompt_cfg)
    examples = []
    for problem, response_text in pairs:
        response = tokenizer(response_text, add_special_tokens=False)["input_ids"]
        examples.append((builder.build(problem).input_ids, list(response) + [tokenizer.eos_token_id]))
    return examples


def shared_prefix_length(examples: Sequence[tuple[list[int], list[int]]]) -> int:
    """Tokens that every prompt starts with (the system prompt and one-shot turns), leaving each
    prompt at least its last token."""
    first = examples[0][0]
    length = min(len(prompt) for prompt, _ in examples) - 1
    for prompt, _ in examples[1:]:
        length = next((i for i in range(length) if prompt[i] != first[i]), length)
    return max(0, length)


def collate(examples: Sequence[tuple[list[int], list[int]]], prefix_length: int, pad_id: int):
    """The rows' tokens after the shared prefix, right-padded, and where the response targets are.

    Returns input_ids [B, L], attention_mask [B, L], rows [T], positions [T], targets [T]: the
    hidden state at (rows[k], positions[k]) of input_ids predicts targets[k], a response token.
    """
    sequences = [prompt[prefix_length:] + response for prompt, response in examples]
    length = max(len(s) for s in sequences)
    input_ids = torch.full((len(examples), length), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(examples), length), dtype=torch.long)
    rows, positions, targets = [], [], []
    for b, ((prompt, response), sequence) in enumerate(zip(examples, sequences)):
        input_ids[b, :len(sequence)] = torch.tensor(sequence)
        attention_mask[b, :len(sequence)] = 1
        rows += [b] * len(response)
        positions += range(len(prompt) - prefix_length - 1, len(sequence) - 1)
        targets += response
    return input_ids, attention_mask, torch.tensor(rows), torch.tensor(positions), torch.tensor(targets)


def response_token_losses(model, prefix_ids: torch.Tensor, input_ids, attention_mask, rows, positions,
                          targets) -> torch.Tensor:
    """[T] cross-entropy of each response token of prefix_ids + input_ids[b], b = rows[k].

    The shared prefix [P] runs once (batch 1, with gradients) and its key/value cache is
    repeated for the batch, so the batch's forward covers only the rows' own tokens; the
    LM head runs on the target positions only.
    """
    cache = None
    if prefix_ids.numel() > 0:
        cache = model.base_model(input_ids=prefix_ids[None], use_cache=True).past_key_values
        cache.batch_repeat_interleave(input_ids.shape[0])
        attention_mask = torch.cat([attention_mask.new_ones(input_ids.shape[0], prefix_ids.numel()),
                                    attention_mask], dim=1)
    hidden = model.base_model(input_ids=input_ids, attention_mask=attention_mask, past_key_values=cache,
                              use_cache=cache is not None).last_hidden_state
    logits = model.get_output_embeddings()(hidden[rows, positions])
    return F.cross_entropy(logits.float(), targets, reduction="none")


def expected_accuracy(token_losses: torch.Tensor, rows: torch.Tensor, num_rows: int) -> float:
    """Mean over rows of P(the whole target response) = exp(-sum of its token losses): the chance
    that temperature-1 sampling writes exactly the target."""
    row_losses = torch.zeros(num_rows, dtype=token_losses.dtype).index_add_(0, rows, token_losses.detach())
    return torch.exp(-row_losses).mean().item()


def learning_rate(step: int, num_steps: int, peak: float, num_warmup: int) -> float:
    """Linear warm-up to `peak`, then cosine decay to peak / 10 at `num_steps`."""
    if step < num_warmup:
        return peak * (step + 1) / num_warmup
    progress = (step - num_warmup) / max(1, num_steps - num_warmup)
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def _read_marker(out_dir: str) -> Optional[dict]:
    try:
        with open(os.path.join(out_dir, MARKER)) as f:
            return json.load(f)
    except (OSError, json.JSONDecodeError):
        return None


def warm_start(base_model_dir: str, out_dir: str, rows, prompt_cfg: PromptConfig, *, steps: int = DEFAULT_STEPS,
               lr: float = DEFAULT_LR, batch_size: int = DEFAULT_BATCH_SIZE, seed: int = 0,
               target_accuracy: Optional[float] = DEFAULT_TARGET_ACCURACY, max_seconds: Optional[float] = None,
               response_template: str = RESPONSE_TEMPLATE, response_field: Optional[str] = None,
               log_every: int = 100) -> str:
    """Fine-tune `base_model_dir` on `rows` into `out_dir` (atomically), or return the cached `out_dir`.

    Trains at most `steps` batches of `batch_size` rows (cosine learning-rate schedule over
    `steps`), stopping early at `target_accuracy` (None: never) or `max_seconds` (None: never).
    The target response is each row's `response_field` (a worked solution) where given, else
    `response_template` with the row's answer.
    """
    if not os.path.isfile(os.path.join(base_model_dir, "config.json")):
        raise ValueError(f"warm start: {base_model_dir} is not a local model folder (no config.json)")
    if steps <= 0 or batch_size <= 0 or lr <= 0:
        raise ValueError(f"warm start: steps, batch_size and lr must be positive, got {steps}, {batch_size}, {lr}")
    if target_accuracy is not None and not 0 < target_accuracy <= 1:
        raise ValueError(f"warm start: target_accuracy must be in (0, 1] or None, got {target_accuracy}")
    if "{answer}" not in response_template:
        raise ValueError(f"warm start: response_template must contain {{answer}}, got {response_template!r}")
    pairs = problem_response_pairs(rows, response_template, response_field)
    if not pairs:
        raise ValueError("warm start: no rows to train on")
    tokenizer = AutoTokenizer.from_pretrained(base_model_dir)
    builder = PromptBuilder(tokenizer, prompt_cfg)
    inputs = {
        "base_model": checkpoint_fingerprint(base_model_dir), "tokenizer": tokenizer_hash(base_model_dir),
        "rows": rows_hash(pairs), "num_rows": len(pairs), "prompt": asdict(prompt_cfg),
        "template": builder.template_hash(), "response_template": response_template,
        **({"response_field": response_field} if response_field is not None else {}),
        "steps": steps, "lr": lr, "batch_size": batch_size, "seed": seed,
        "target_accuracy": target_accuracy, "max_seconds": max_seconds,
    }
    marker = _read_marker(out_dir)
    if marker is not None and marker.get("inputs") == inputs:
        result = marker["result"]
        print(f"warm start: cached {out_dir} ({result['num_steps']} steps, final loss {result['final_loss']:.3f}, "
              f"expected accuracy {result['expected_accuracy']:.3f})", file=sys.stderr)
        return out_dir

    examples = build_examples(tokenizer, pairs, prompt_cfg)
    pad_id = pad_token_id(tokenizer)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_pretrained(base_model_dir, dtype=torch.float32)
        model.train()
        result = _train(model, examples, pad_id, steps=steps, lr=lr, batch_size=batch_size, seed=seed,
                        target_accuracy=target_accuracy, max_seconds=max_seconds, log_every=log_every)
    model.eval()

    return save_model_folder(out_dir, model, tokenizer, MARKER, {"inputs": inputs, "result": result})


def _train(model, examples, pad_id: int, *, steps: int, lr: float, batch_size: int, seed: int,
           target_accuracy: Optional[float], max_seconds: Optional[float], log_every: int) -> dict:
    """AdamW on the response loss over shuffled passes through `examples`; returns a summary.

    Stops early once the expected accuracy of the last ACCURACY_WINDOW_STEPS batches (measured
    before each update) reaches `target_accuracy`, or after `max_seconds`.
    """
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.98), weight_decay=0.01)
    order = torch.Generator().manual_seed(seed)
    prefix_length = shared_prefix_length(examples)
    prefix_ids = torch.tensor(examples[0][0][:prefix_length], dtype=torch.long)
    queue: list[int] = []
    num_warmup = max(1, steps // 20)
    start, losses, accuracies, stopped_by = time.perf_counter(), [], [], "steps"
    for step in range(steps):
        if len(queue) < batch_size:
            queue += torch.randperm(len(examples), generator=order).tolist()
        batch, queue = [examples[i] for i in queue[:batch_size]], queue[batch_size:]
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, steps, lr, num_warmup)
        input_ids, attention_mask, rows, positions, targets = collate(batch, prefix_length, pad_id)
        token_losses = response_token_losses(model, prefix_ids, input_ids, attention_mask, rows, positions, targets)
        loss = token_losses.mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        losses.append(loss.item())
        accuracies.append(expected_accuracy(token_losses, rows, len(batch)))
        window = accuracies[-ACCURACY_WINDOW_STEPS:]
        recent_accuracy = sum(window) / len(window)
        elapsed = time.perf_counter() - start
        full_window = len(accuracies) >= ACCURACY_WINDOW_STEPS
        if target_accuracy is not None and full_window and recent_accuracy >= target_accuracy:
            stopped_by = "target_accuracy"
        elif max_seconds is not None and elapsed > max_seconds and step + 1 < steps:
            stopped_by = "max_seconds"
        if (step + 1) % log_every == 0 or step + 1 == steps or stopped_by != "steps":
            recent = losses[-log_every:]
            print(f"warm start: step {step + 1}/{steps} loss {sum(recent) / len(recent):.4f} "
                  f"expected accuracy {recent_accuracy:.3f} ({elapsed:.0f}s)", file=sys.stderr, flush=True)
        if stopped_by != "steps":
            print(f"warm start: stopped after {step + 1}/{steps} steps by {stopped_by}", file=sys.stderr, flush=True)
            break
    recent = losses[-log_every:]
    return {"num_steps": len(losses), "stopped_by": stopped_by, "first_loss": losses[0],
            "final_loss": sum(recent) / len(recent), "expected_accuracy": recent_accuracy,
            "seconds": round(time.perf_counter() - start, 2)}


def prompt_config_from_recipe(path: Optional[str]) -> PromptConfig:
    """The `prompt:` section of a training recipe (defaults for keys it leaves out)."""
    if path is None:
        return PromptConfig()
    if not os.path.isfile(path):
        raise ValueError(f"--recipe: file not found: {path}")
    section = OmegaConf.load(path).get("prompt") or {}
    try:
        return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(PromptConfig), section))
    except OmegaConfBaseException as e:
        key = f"prompt.{getattr(e, 'full_key', '?')}"
        raise ValueError(f"{path}: config key '{key}': {str(e).splitlines()[0]}") from None


def _optional_float(text: str) -> Optional[float]:
    return None if text.lower() == "none" else float(text)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", required=True, help="model folder to start from")
    parser.add_argument("--data", required=True, help="training rows (.jsonl/.json/.parquet with id, problem, answer)")
    parser.add_argument("--out", required=True, help="output model folder")
    parser.add_argument("--recipe", default=None, help="training recipe YAML whose prompt section to use "
                                                       "(default: gainrl.config.PromptConfig's defaults)")
    parser.add_argument("--steps", type=int, default=DEFAULT_STEPS)
    parser.add_argument("--lr", type=float, default=DEFAULT_LR)
    parser.add_argument("--batch_size", type=int, default=DEFAULT_BATCH_SIZE)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--target_accuracy", type=_optional_float, default=DEFAULT_TARGET_ACCURACY,
                        help="stop once the expected sampled accuracy on the training batches reaches this "
                             "('none': never)")
    parser.add_argument("--max_seconds", type=_optional_float, default=None,
                        help="stop training after this many seconds")
    parser.add_argument("--response_field", default=None,
                        help="row field holding the response to train on, e.g. a worked solution "
                             "(default: 'The answer is \\boxed{answer}.')")
    args = parser.parse_args(argv)
    keep = [args.response_field] if args.response_field is not None else []
    rows = load_rows(DataConfig(path=args.data, keep_fields=keep)).rows
    path = warm_start(args.base, args.out, rows, prompt_config_from_recipe(args.recipe), steps=args.steps,
                      lr=args.lr, batch_size=args.batch_size, seed=args.seed,
                      target_accuracy=args.target_accuracy, max_seconds=args.max_seconds,
                      response_field=args.response_field)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
