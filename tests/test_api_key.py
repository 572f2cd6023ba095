"""The API key read from the environment: a trailing newline is stripped, inner whitespace or
control characters are refused without echoing the value."""

from __future__ import annotations

import pytest

from scalecap.backends.base import BackendError
from scalecap.backends.openai_compat import _read_key


def test_a_trailing_newline_is_stripped_and_inner_control_characters_are_refused(monkeypatch):
    monkeypatch.setenv("SC_TEST_KEY", "sk-abc123\n")
    assert _read_key("SC_TEST_KEY") == "sk-abc123"
    monkeypatch.setenv("SC_TEST_KEY", "sk-ab\r\nX-Evil: 1")
    with pytest.raises(BackendError) as exc:
        _read_key("SC_TEST_KEY")
    assert "sk-ab" not in str(exc.value) and "SC_TEST_KEY" in str(exc.value)
    monkeypatch.setenv("SC_TEST_KEY", " \n")
    with pytest.raises(BackendError, match="not set"):
        _read_key("SC_TEST_KEY")
    assert _read_key(None) is None


def test_the_key_is_redacted_also_in_its_escaped_forms(monkeypatch):
    import json

    from scalecap.backends.openai_compat import OpenAIBackend
    from scalecap.config import ModelConfig

    monkeypatch.setenv("SC_TEST_KEY", 'sk-"q\\x')
    backend = OpenAIBackend(ModelConfig(backend="openai", model="m", api_base="http://127.0.0.1:1",
                                        api_key_env="SC_TEST_KEY"))
    key = 'sk-"q\\x'
    assert backend._redact(f"a {key} b {key!r} c {json.dumps(key)}") == "a *** b '***' c \"***\""
