"""Self-correction that is itself debiased (beyond the paper; after SC-Captioner, METHOD.md section 6).

SC-Captioner adds one turn to the captioner's conversation: the image and the caption stay, a new
user turn asks it to re-check objects, attributes and relations, remove what is not in the image,
add what is missing and output only the caption. A model not trained for that "corrects" by
inventing as readily as by fixing, so here the reply is split into sentences and each one is rated
with the image exactly like the sentences of the first caption (METHOD step 2: same scorer, score
mode and tau): the sentences that fail never reach the corrected caption.

The rating conditions on P_cap, the prompt of the first caption, not on the correction
conversation: with the caption already in the context, every sentence copied from it is as
predictable without the image as with it, so its contrast would collapse and a sentence kept
unchanged would be dropped for being a copy. Rated under P_cap, a sentence the correction keeps
verbatim scores exactly as it would in a first caption.

Each round re-checks the previous round's result in a fresh conversation (image, P_cap, that
caption as the assistant's turn, the correction prompt), so the context does not grow with rounds.
A round whose reply is empty, or none of whose sentences passes, changes nothing (``accepted`` is
False in the record). Pure orchestration over two callables; the pipeline supplies the model calls.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

from .backends.base import Generation
from .rating import RatedText
from .records import Correction, CorrectionRound, ScoredSentence, SentenceDiff
from .text.sentences import split_sentences

#: One correction turn: the caption to re-check -> the captioner's reply.
Reply = Callable[[str], Awaitable[Generation]]
#: The contrastive rating of a text (METHOD step 2).
Rate = Callable[[str], Awaitable[RatedText]]


async def self_correct(caption: str, rounds: int, reply: Reply, rate: Rate) -> Correction:
    """``rounds`` correction turns starting from ``caption``; the record of each and the result."""
    if rounds < 1:
        raise ValueError(f"correction rounds must be >= 1, got {rounds}")
    current = caption
    done: list[CorrectionRound] = []
    for _ in range(rounds):
        out = await reply(current)
        sentences = (await rate(out.text)).sentences if out.text else []
        passed = [s for s in sentences if s.kept]
        accepted = bool(passed)
        corrected = kept_text(out.text, sentences) if accepted else current
        done.append(CorrectionRound(
            input=current, output=out.text, sentences=sentences, caption=corrected, accepted=accepted,
            truncated=out.finish_reason == "length",
            diff=sentence_diff(_split(current), _split(corrected), [s.text for s in sentences if not s.kept])))
        current = corrected
    rejected = list(dict.fromkeys(text for r in done for text in r.diff.rejected))
    return Correction(rounds=done, caption=current, diff=sentence_diff(_split(caption), _split(current), rejected))


def kept_text(text: str, sentences: Sequence[ScoredSentence]) -> str:
    """The kept sentences of ``text`` in order, each after the separator that preceded it there (so a
    list keeps its line breaks); never a clause cut out of a sentence (METHOD step 2)."""
    parts: list[str] = []
    previous_end: int | None = None
    for s in sentences:
        if s.kept:
            if parts and previous_end is not None:
                parts.append(text[previous_end:s.start])
            parts.append(text[s.start:s.end])
        previous_end = s.end
    return "".join(parts)


def sentence_diff(before: Sequence[str], after: Sequence[str], rejected: Sequence[str] = ()) -> SentenceDiff:
    """Sentences added, removed and kept between two captions, matched after whitespace and case
    folding (a re-spaced or re-capitalised sentence is the same sentence)."""
    before_keys = {_key(s) for s in before}
    after_keys = {_key(s) for s in after}
    return SentenceDiff(added=[s for s in after if _key(s) not in before_keys],
                        removed=[s for s in before if _key(s) not in after_keys],
                        kept=[s for s in after if _key(s) in before_keys],
                        rejected=list(rejected))


def _split(text: str) -> list[str]:
    return [s.text for s in split_sentences(text)]


def _key(sentence: str) -> str:
    return " ".join(sentence.split()).casefold()


__all__ = ["kept_text", "self_correct", "sentence_diff"]
