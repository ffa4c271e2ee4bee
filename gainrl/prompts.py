"""Chat prompts and their P/Q/S token spans (METHOD.md section 2), for any chat template; the prompts of data rows.

P = everything before the question text, Q = the question's own tokens, S = what follows
(end of turn, assistant header). Boundaries come from the tokenizer: the template is
rendered around a marker to find the question's characters, and the real prompt's token
offsets map characters to tokens. Nothing depends on fixed token counts.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass

from .config import PromptConfig
from .data import Row

_MARKER = "\x00GAINRL-QUESTION\x00"


@dataclass(frozen=True)
class Prompt:
    input_ids: list[int]
    p_end: int  # tokens [0, p_end) are P
    q_end: int  # tokens [p_end, q_end) are Q; [q_end, len) are S

    @property
    def num_tokens(self) -> int:
        return len(self.input_ids)


class PromptBuilder:
    """Renders prompts with a tokenizer's chat template and splits them into P/Q/S."""

    def __init__(self, tokenizer, cfg: PromptConfig):
        if not getattr(tokenizer, "is_fast", False):
            raise ValueError("a fast tokenizer (with offset mapping) is required to find prompt spans")
        self.tokenizer = tokenizer
        self.cfg = cfg
        self.chat_template = _resolve_template(cfg.chat_template) or tokenizer.chat_template
        if not self.chat_template:
            raise ValueError(f"tokenizer {getattr(tokenizer, 'name_or_path', '?')} has no chat template; "
                             "set prompt.chat_template")
        marked = self.render(_MARKER)
        if marked.count(_MARKER) != 1:
            raise ValueError("the chat template must render the user message exactly once")
        self._prefix, self._suffix = marked.split(_MARKER)

    def messages(self, problem: str) -> list[dict]:
        cfg = self.cfg
        messages = []
        if cfg.system_prompt is not None:
            messages.append({"role": "system", "content": cfg.system_prompt})
        if cfg.one_shot_question is not None:
            messages.append({"role": "user", "content": cfg.question_template.replace("{problem}", cfg.one_shot_question)})
            messages.append({"role": "assistant", "content": cfg.one_shot_answer})
        messages.append({"role": "user", "content": cfg.question_template.replace("{problem}", problem)})
        return messages

    def render(self, problem: str) -> str:
        return self.tokenizer.apply_chat_template(self.messages(problem), chat_template=self.chat_template,
                                                  tokenize=False, add_generation_prompt=True)

    def build(self, problem: str) -> Prompt:
        text = self.render(problem)
        q_start, q_stop = len(self._prefix), len(text) - len(self._suffix)
        if not (text.startswith(self._prefix) and text.endswith(self._suffix) and q_start < q_stop):
            raise ValueError("the chat template renders text around the question that depends on the question; "
                             f"cannot find the question span in: {text[:200]!r}...")
        encoding = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        offsets = encoding["offset_mapping"]
        # A token belongs to P if it ends before the question, to S if it starts after it,
        # and to Q otherwise (tokens straddling a boundary count as question tokens).
        p_end = next((i for i, (_, end) in enumerate(offsets) if end > q_start), len(offsets))
        q_end = next((i for i in range(p_end, len(offsets)) if offsets[i][0] >= q_stop), len(offsets))
        return Prompt(input_ids=list(encoding["input_ids"]), p_end=p_end, q_end=q_end)

    def template_hash(self) -> str:
        """Everything that shapes the prompt text, hashed."""
        payload = {"chat_template": self.chat_template, "system_prompt": self.cfg.system_prompt,
                   "one_shot": [self.cfg.one_shot_question, self.cfg.one_shot_answer],
                   "question_template": self.cfg.question_template}
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def _resolve_template(value):
    if value is not None and "{" not in value and os.path.isfile(value):
        with open(value, encoding="utf-8") as f:
            return f.read()
    return value


# ---- the prompts of data rows: the one function the trainer, validation and the scorer use --------

def code_problem_text(prompt: str, test: str, test_type: str) -> str:
    """What a code prompt asks (training and evaluation alike). check_fn rows show the function to
    complete; script rows (MBPP) get their first top-level assert unless the prompt quotes one
    already (MBPP+), since it names the function the tests call and shows its use."""
    if test_type == "check_fn":
        return f"Complete the following Python function:\n```python\n{prompt.rstrip()}\n```"
    text = prompt.strip()
    first_assert = next((line for line in test.splitlines() if line.startswith("assert ")), None)
    if first_assert is not None and "assert" not in text:
        text += f"\nYour code should pass this test:\n{first_assert}"
    return text


def problem_text(row: Row) -> str:
    """The text a row's prompt asks about. A code row (one that keeps its `test` and `test_type`
    fields, as reward.kind=code requires) is shown as the code task evaluation shows; any other
    row's problem as it is. Decided by the row, so that what is scored is what is trained on."""
    if "test" in row.fields and "test_type" in row.fields:
        return code_problem_text(row.problem, row.fields["test"], row.fields["test_type"])
    return row.problem


def build_prompts(builder: PromptBuilder, rows: list[Row]) -> list[Prompt]:
    return [builder.build(problem_text(row)) for row in rows]
