"""The one definition of "the same scores as transformers", shared by the served and in-process
vLLM backends' parity tests."""

from __future__ import annotations

from scalecap.backends.base import TokenScores

#: ASCII words, a decimal, a newline, and characters split across byte-level tokens (ö, the emoji).
TEXT = "A man in a white suit stands near 3.5 flags.\nThe wörld is 🚀 big!"

#: float32 on CPU: vLLM's kernels and transformers' eager attention differ in the last digits.
LOGPROB_TOLERANCE = 1e-3


def assert_same_scores(ours: TokenScores, ref: TokenScores) -> None:
    """Same tokens, same character offsets (multi-byte characters included), log-probs within the
    tolerance, no logits (vLLM exposes none), same prompt length."""
    assert ours.token_ids == ref.token_ids
    assert ours.offsets == ref.offsets
    assert max(abs(a - b) for a, b in zip(ours.logprobs, ref.logprobs)) < LOGPROB_TOLERANCE
    assert ours.logits is None and ours.prompt_tokens == ref.prompt_tokens
