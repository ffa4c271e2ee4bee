"""P/Q/S token spans from the tokenizer, for ChatML (Qwen2.5) and a Llama-3-style template."""
import pytest

from gainrl.config import PromptConfig
from gainrl.data import DataConfig, load_rows
from gainrl.prompts import PromptBuilder
from tests.helpers import BUNDLED_ROWS

# Llama-3 chat format (header tokens, double newline, trimmed content, end-of-turn token).
LLAMA3_STYLE = (
    "{{- '<|begin_of_text|>' -}}"
    "{%- for message in messages -%}"
    "{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + message['content'] | trim + '<|eot_id|>' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' -}}{%- endif -%}"
)
TEMPLATES = {"chatml": None, "llama3": LLAMA3_STYLE}


def problems():
    rows = load_rows(DataConfig(path=BUNDLED_ROWS, limit=20)).rows
    return [r.problem for r in rows] + ["x", "7", "  padded question  ", "Line one.\nLine two?"]


@pytest.mark.parametrize("template", TEMPLATES)
def test_spans_decode_to_prefix_question_and_suffix(tiny_tokenizer, template):
    builder = PromptBuilder(tiny_tokenizer, PromptConfig(chat_template=TEMPLATES[template]))
    prefix, suffix = builder.render("\x00").split("\x00")
    p_ends = set()
    for problem in problems():
        prompt = builder.build(problem)
        ids = prompt.input_ids
        text = builder.render(problem)
        # the tokens are the model's real input: the rendered prompt, tokenized once
        assert ids == tiny_tokenizer(text, add_special_tokens=False)["input_ids"]
        assert 0 < prompt.p_end < prompt.q_end < len(ids)
        assert tiny_tokenizer.decode(ids[: prompt.p_end]) == prefix
        assert tiny_tokenizer.decode(ids[prompt.q_end:]) == suffix
        question = tiny_tokenizer.decode(ids[prompt.p_end: prompt.q_end])
        expected = problem.strip() if template == "llama3" else problem  # that template trims content
        assert question == expected
        p_ends.add(prompt.p_end)
    assert len(p_ends) == 1  # P is the same for every question


def test_system_prompt_one_shot_and_question_template_land_in_the_right_segment(tiny_tokenizer):
    bare = PromptBuilder(tiny_tokenizer, PromptConfig(system_prompt=None, one_shot_question=None, one_shot_answer=None))
    full = PromptBuilder(tiny_tokenizer, PromptConfig(question_template="Solve: {problem}\nShow your work."))
    problem = "What is 3 times 4?"
    a, b = bare.build(problem), full.build(problem)
    assert b.p_end > a.p_end  # system prompt and one-shot exchange are P
    # " What" and "?\n" are single tokens that straddle the boundaries: they count as Q
    assert tiny_tokenizer.decode(b.input_ids[b.p_end:b.q_end]) == " " + problem + "\n"
    assert tiny_tokenizer.decode(b.input_ids[:b.p_end]).endswith("Solve:")
    assert tiny_tokenizer.decode(b.input_ids[b.q_end:]).startswith("Show your work.")
    assert "What is 2+2?" in tiny_tokenizer.decode(b.input_ids[:b.p_end])


def test_template_hash_tracks_every_prompt_setting(tiny_tokenizer):
    base = PromptBuilder(tiny_tokenizer, PromptConfig()).template_hash()
    assert base == PromptBuilder(tiny_tokenizer, PromptConfig()).template_hash()
    for changed in (PromptConfig(system_prompt="Be brief."), PromptConfig(question_template="Q: {problem}"),
                    PromptConfig(chat_template=LLAMA3_STYLE), PromptConfig(one_shot_question=None, one_shot_answer=None)):
        assert PromptBuilder(tiny_tokenizer, changed).template_hash() != base


def test_template_errors_are_clear(tiny_tokenizer, tmp_path):
    with pytest.raises(ValueError, match="exactly once"):
        PromptBuilder(tiny_tokenizer, PromptConfig(chat_template="{{ messages[-1]['content'] }}{{ messages[-1]['content'] }}"))
    path = tmp_path / "t.jinja"
    path.write_text(LLAMA3_STYLE)
    from_file = PromptBuilder(tiny_tokenizer, PromptConfig(chat_template=str(path)))
    assert from_file.chat_template == LLAMA3_STYLE
