"""The degenerate-output checks on realistic texts, and on 436 real Qwen2.5-VL captions."""

import json
from pathlib import Path

import pytest

from scalecap.text.degenerate import DegenerateConfig, check_text, strip_stock_opening

DATA = Path(__file__).resolve().parent.parent / "data"


def codes(text, **kw):
    return [h.code for h in check_text(text, **kw)]


def test_a_clean_detailed_caption_has_no_hit():
    text = ("A tabby cat sits on a wooden windowsill. Sunlight falls across its fur from the left.\n\n"
            "### Objects\n- **Cat**: orange and white, eyes half closed.\n- **Plant**: a small cactus in a clay pot.")
    assert check_text(text) == []


def test_a_sentence_loop_is_repetition():
    text = "The image shows a street. " + "There is a car parked on the street. " * 6
    hits = check_text(text)
    assert [h.code for h in hits] == ["repetition"]
    assert hits[0].value == 6  # six identical sentences in a row


def test_a_list_loop_is_repetition_by_distinct_ngram_ratio():
    text = "The bag lists:\n" + "".join("- Green Beans\n- Red Bell Peppers\n" for _ in range(15))
    hit = next(h for h in check_text(text) if h.code == "repetition")
    assert hit.value is not None and hit.value < DegenerateConfig().min_distinct_ratio


def test_a_token_loop_at_the_end_is_repetition():
    assert "repetition" in codes("The writing gets worse until it reads the" + "... the" * 12)


@pytest.mark.parametrize("text", [
    "I'm sorry, but I can't help with identifying people in images.",
    "I cannot describe this image because it appears to contain sensitive content.",
    "As an AI language model, I do not have the ability to see images.",
    "Sorry, I am unable to view the attached picture.",
])
def test_refusals(text):
    assert "refusal" in codes(text)


def test_a_refusal_word_inside_a_caption_is_not_a_refusal():
    assert codes('A protest sign reads "I cannot breathe" in red letters on white card.') == []


def test_drift_into_chinese_is_script_drift_but_a_quoted_sign_is_not():
    drift = "The image shows a market street. 这张图片展示了一个繁忙的市场，许多人在购买新鲜的蔬菜和水果，背景中有红色的灯笼。"
    assert "script_drift" in codes(drift)
    quoted = 'A shop front with a large red sign reading "北京烤鸭" above the door, and two customers waiting outside.'
    assert "script_drift" not in codes(quoted)


@pytest.mark.parametrize("text", [
    "The menu lists three items:\n1. Pancakes with syrup\n2. Eggs and",
    "The chart compares four countries, with Japan, Korea,",
    "Key elements:\n- A red bicycle\n-",
])
def test_truncated_endings(text):
    assert "truncated" in codes(text)


def test_the_generators_own_truncation_flag_is_reported():
    assert codes("A cat on a mat.", truncated=True) == ["truncated"]


def test_empty_and_short():
    assert codes("   ") == ["empty"]
    assert codes("Cat.") == ["too_short"]


def test_stock_opening_is_opt_in_and_strippable():
    text = "The image shows a red bus on a bridge."
    assert codes(text) == []
    assert codes(text, stock_opening=True) == ["stock_opening"]
    assert strip_stock_opening(text) == "A red bus on a bridge."
    assert strip_stock_opening("A red bus.") == "A red bus."


def test_real_captions_hit_only_where_the_model_really_degenerated():
    """436 real captions (218 MM-Vet images, first and final): the only hits are three first
    captions, each read by hand and degenerate: v1_69 loops "Green Beans / Red Bell Peppers" to the
    token limit, v1_151 loops "the..." to the end, v1_25 stops mid-sentence ("... provide a")."""
    rows = [json.loads(line) for line in (DATA / "mmvet_scalecap_captions.jsonl").read_text().splitlines()]
    hits = {}
    for row in rows:
        for field in ("ori_caption", "final_caption"):
            found = codes(row[field])
            if found:
                hits[(row["image_file"], field)] = found
    assert hits == {("v1_69.jpg", "ori_caption"): ["repetition"],
                    ("v1_151.jpg", "ori_caption"): ["repetition"],
                    ("v1_25.png", "ori_caption"): ["truncated"]}
