"""The transformers backend decodes with our settings, never the checkpoint's generation_config.

Qwen2/2.5-VL checkpoints ship a repetition penalty of 1.05 (and sampling settings); transformers
applies a checkpoint's generation_config unless told otherwise, which made the same ModelConfig
decode differently on transformers than on vLLM or a server (issue 13).
"""

import asyncio
import json
import shutil

import pytest

from scalecap.backends import ChatPrompt, GenerationParams, open_backend
from scalecap.config import ModelConfig

pytestmark = pytest.mark.slow


def _greedy(model_dir, repetition_penalty=1.0):
    backend = open_backend(ModelConfig(model=str(model_dir)))
    prompt = ChatPrompt("Describe a red square in detail.", None, None)
    params = GenerationParams(max_tokens=24, repetition_penalty=repetition_penalty)
    return asyncio.run(backend.generate(prompt, params)).text


def test_checkpoint_repetition_penalty_is_not_applied(tiny_models, tmp_path):
    plain = tmp_path / "plain"
    shutil.copytree(tiny_models["qwen2"], plain)
    penalised = tmp_path / "penalised"
    shutil.copytree(tiny_models["qwen2"], penalised)
    config_path = penalised / "generation_config.json"
    config = json.loads(config_path.read_text())
    # A strong penalty and sampling on: if either were applied, the greedy text would change.
    config.update(repetition_penalty=3.0, do_sample=True, temperature=1.5, top_k=5)
    config_path.write_text(json.dumps(config))

    baseline = _greedy(plain)
    assert _greedy(penalised) == baseline
    # The setting itself is live: asking for the same penalty explicitly changes the text, so the
    # equality above is not a model that ignores penalties.
    assert _greedy(plain, repetition_penalty=3.0) != baseline
