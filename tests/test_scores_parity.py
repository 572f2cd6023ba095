"""The scores in a trace are the model's real differences.

The pipeline runs with token-level traces on; this test recomputes p and p' of the first caption's
tokens independently, with plain transformers calls (chat template, processor, one forward pass,
log-softmax), and checks every stored delta in each score mode, for two model families.
"""

import math

import pytest
import torch
from PIL import Image

from scalecap import ScaleCap
from scalecap.prompts import load_preset

pytestmark = pytest.mark.slow


def reference_values(folder, image, caption):
    """(logprob, logit) per caption token, with the image and without, computed from scratch."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    processor = AutoProcessor.from_pretrained(folder)
    model = AutoModelForImageTextToText.from_pretrained(folder, dtype=torch.float32).eval()
    prompts = load_preset("paper")
    enc_caption = processor.tokenizer(caption, add_special_tokens=False, return_offsets_mapping=True)
    ids = enc_caption["input_ids"]
    out = {"offsets": [tuple(o) for o in enc_caption["offset_mapping"]]}
    for with_image in (True, False):
        content = ([{"type": "image"}] if with_image else []) + [{"type": "text", "text": prompts.caption}]
        messages = [{"role": "system", "content": [{"type": "text", "text": prompts.system}]},
                    {"role": "user", "content": content}]
        text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        images = ([[image]] if "Idefics" in type(processor).__name__ else [image]) if with_image else None
        enc = processor(text=[text], images=images, return_tensors="pt")
        full = torch.cat([enc["input_ids"], torch.tensor([ids])], dim=1)
        extra = {k: v for k, v in enc.items() if k not in ("input_ids", "attention_mask")}
        if "mm_token_type_ids" in extra:
            extra["mm_token_type_ids"] = torch.cat([extra["mm_token_type_ids"], torch.zeros(1, len(ids), dtype=torch.long)], 1)
        with torch.no_grad():
            logits = model(input_ids=full, attention_mask=torch.ones_like(full), **extra).logits[0].float()
        rows = logits[-len(ids) - 1:-1]
        target = torch.tensor(ids)
        lp = torch.log_softmax(rows, -1).gather(-1, target[:, None])[:, 0]
        raw = rows.gather(-1, target[:, None])[:, 0]
        out[with_image] = (lp.tolist(), raw.tolist())
    return out


@pytest.mark.parametrize("family", ["qwen2vl", "llava"])
def test_trace_scores_equal_independent_recomputation(family, tiny_models, sample_images, tiny_settings):
    folder = str(tiny_models[family])
    image = Image.open(sample_images["astronaut"]).convert("RGB")
    reference = None
    for mode in ("prob", "logprob", "logit"):
        sc = ScaleCap(captioner=folder, scorer=folder, writer=str(tiny_models["qwen2"]), budget=0,
                      score_mode=mode, store_tokens=True, **tiny_settings)
        result = sc.caption(sample_images["astronaut"])
        assert result.status == "ok", result.error
        if reference is None:
            reference = reference_values(folder, image, result.first_caption)
        (lp_img, raw_img), (lp_txt, raw_txt) = reference[True], reference[False]
        expected = {
            "prob": [math.exp(a) - math.exp(b) for a, b in zip(lp_img, lp_txt)],
            "logprob": [a - b for a, b in zip(lp_img, lp_txt)],
            "logit": [a - b for a, b in zip(raw_img, raw_txt)],
        }[mode]
        offsets = reference["offsets"]
        compared = 0
        for sentence in result.sentences:
            members = [i for i, (s, e) in enumerate(offsets) if s < sentence.end and e > sentence.start]
            assert len(members) == len(sentence.tokens)
            for i, tok in zip(members, sentence.tokens):
                assert (tok.start, tok.end) == offsets[i]
                assert abs(tok.delta - expected[i]) < 1e-4
                compared += 1
        assert compared >= len([o for o in offsets if result.first_caption[o[0]:o[1]].strip()]) > 0
        for sentence in result.sentences:  # a sentence's score is the max over its content tokens
            content = [t.delta for t in sentence.tokens if t.content]
            assert sentence.score == (max(content) if content else None)
            assert sentence.kept == (sentence.score is not None and sentence.score > result.fingerprint.tau)
        assert result.fingerprint.score_mode == mode
