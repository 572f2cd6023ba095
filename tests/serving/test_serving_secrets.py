"""The API key never leaves the request headers: not in records, errors, logs or reprs."""

from __future__ import annotations

import logging

import pytest

from scalecap import ScaleCap
from scalecap.backends.base import BackendError, ChatPrompt, GenerationParams
from scalecap.backends.openai_compat import OpenAIBackend
from scalecap.config import ModelConfig

SERVED_NAME = "tiny-qwen2vl"  # the name the session server (conftest.py) serves the model under

pytestmark = [pytest.mark.vllm, pytest.mark.timeout(600)]  # server start-up included

KEY = "sk-secret-123"
ENV = "SCALECAP_TEST_KEY"


@pytest.fixture
def keyed(monkeypatch, caplog):
    monkeypatch.setenv(ENV, KEY)
    caplog.set_level(logging.DEBUG)  # every logger, httpx and httpcore included

    def make(api_base: str, model: str = SERVED_NAME, **kw) -> ModelConfig:
        return ModelConfig(backend="openai", model=model, api_base=api_base, api_key_env=ENV, max_retries=1,
                           backoff_base=0.01, backoff_max=0.02, **kw)

    return make


def assert_no_key(*texts: object) -> None:
    for t in texts:
        assert KEY not in str(t), t


def test_missing_key_variable_is_a_clear_error_at_construction(monkeypatch):
    monkeypatch.delenv(ENV, raising=False)
    with pytest.raises(BackendError, match=f"api_key_env is '{ENV}'.*not set"):
        OpenAIBackend(ModelConfig(backend="openai", model="m", api_base="http://127.0.0.1:9/v1", api_key_env=ENV))


async def test_key_is_sent_but_never_shown(keyed, fake_closed_api, caplog):
    fake = fake_closed_api(unauthorized="all")  # the 401 body echoes the Authorization header
    config = keyed(fake.api_base, model="gpt-fake")
    backend = OpenAIBackend(config)
    with pytest.raises(BackendError) as err:
        await backend.probe()
    assert "HTTP 401" in str(err.value) and "Bearer ***" in str(err.value)
    with pytest.raises(BackendError) as err2:
        await backend.generate(ChatPrompt("hi"), GenerationParams(max_tokens=2))
    assert_no_key(err.value, repr(err.value), err.value.__cause__, err2.value, repr(backend), backend.describe(),
                  repr(config), config, config.model_dump_json(), config.public(), caplog.text,
                  *(r.getMessage() for r in caplog.records), *(r.args for r in caplog.records))
    await backend.aclose()


def test_wrong_model_name_on_a_real_server(keyed, vllm_server, caplog):
    backend = OpenAIBackend(keyed(vllm_server.api_base, model="no-such-model"))
    with pytest.raises(BackendError, match="'no-such-model' is not served") as err:
        _ = backend.capabilities
    assert_no_key(err.value, repr(backend), caplog.text)


def test_failed_records_carry_no_key(keyed, vllm_server, fake_closed_api, sample_images, tiny_settings, caplog):
    fake = fake_closed_api()
    served, closed = keyed(vllm_server.api_base), keyed(fake.api_base, model="gpt-fake")
    sc = ScaleCap(captioner=served, scorer=served, writer=closed, budget=1, tau=-1.0, **tiny_settings)
    fake.unauthorized = "chat"  # the key is revoked mid-run: the writer's calls get 401 with the key echoed
    result = sc.caption(sample_images["astronaut"])
    assert result.status == "failed" and "HTTP 401" in result.error and "***" in result.error
    assert_no_key(result.model_dump_json(), result.fingerprint.model_dump_json(), caplog.text,
                  *(repr(b) for b in sc.backends.values()))
