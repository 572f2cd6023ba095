"""Pure text handling for ScaleCap: sentences, content-word masks and object instructions.

Nothing here touches a model except the optional spaCy tagger, which is imported lazily.
"""

from scalecap.text.content import (
    CONTENT_POS,
    ContentTagger,
    LexiconTagger,
    SpacyTagger,
    load_tagger,
)
from scalecap.text.instructions import (
    OBJECT_TEMPLATE,
    POSITION_TEMPLATE,
    instruction_regex,
    object_key,
    parse_instructions,
    plan_objects,
)
from scalecap.text.sentences import Sentence, split_sentences

__all__ = [
    "CONTENT_POS",
    "OBJECT_TEMPLATE",
    "POSITION_TEMPLATE",
    "ContentTagger",
    "LexiconTagger",
    "Sentence",
    "SpacyTagger",
    "instruction_regex",
    "load_tagger",
    "object_key",
    "parse_instructions",
    "plan_objects",
    "split_sentences",
]
