"""CUDA paths: the cut model in bf16 on a GPU ranks prompts like fp32 on the CPU."""
import pytest
import torch
from scipy.stats import spearmanr

from gainrl.config import DataConfig, PromptConfig
from gainrl.data import load_rows
from gainrl.prefill import load_prefill_model
from gainrl.prompts import PromptBuilder
from gainrl.scorer import plan_batches, score_batch
from tests.helpers import BUNDLED_ROWS

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


def scores_on(model, rows, prompts, pad_id):
    records = {}
    for batch in plan_batches([p.num_tokens for p in prompts], 4096):
        for r in score_batch(model, [rows[i] for i in batch], [prompts[i] for i in batch], pad_id):
            records[r["id"]] = r["c_intra"] + 8.0 * r["c_inter"]
    return [records[row.id] for row in rows]


def test_bf16_cuda_matches_fp32_cpu(tiny_model_dir, tiny_tokenizer):
    rows = load_rows(DataConfig(path=BUNDLED_ROWS, limit=128)).rows
    prompts = [PromptBuilder(tiny_tokenizer, PromptConfig()).build(r.problem) for r in rows]
    pad = tiny_tokenizer.pad_token_id
    cpu = scores_on(load_prefill_model(tiny_model_dir, -1, dtype="float32"), rows, prompts, pad)
    gpu_model = load_prefill_model(tiny_model_dir, -1, dtype="bfloat16", device=torch.device("cuda"))
    gpu = scores_on(gpu_model, rows, prompts, pad)
    assert max(abs(a - b) for a, b in zip(cpu, gpu)) < 0.05
    assert spearmanr(cpu, gpu).statistic > 0.98
