"""Real OCR on a real printed page (scikit-image's ``page``), and quotes checked against it."""

import pytest
from PIL import Image

from scalecap.text.quotes import check_quotes, find_quotes, quote_support
from scalecap.tools.ocr import OcrError, open_ocr

pytestmark = pytest.mark.ocr


@pytest.fixture(scope="module")
def page():
    skimage_data = pytest.importorskip("skimage.data")
    from pathlib import Path

    return Image.open(Path(skimage_data.__file__).parent / "page.png")


@pytest.mark.parametrize("engine", ["tesseract", "rapidocr"])
def test_ocr_reads_the_printed_page(page, engine):
    text = open_ocr(engine).read(page).text.lower()
    assert "markers of the coins" in text
    assert "object or background" in text.replace("background.", "background ").replace("  ", " ")


def test_quotes_of_text_that_is_there_pass_and_invented_ones_are_marked(page):
    ocr = open_ocr("tesseract").read(page).text
    caption = ('The page explains that one should "determine markers of the coins and the background" first. '
               'A footnote reads "Copyright 1998 Springer Verlag".')
    checks = check_quotes(caption, ocr)
    assert [c.quote for c in checks] == ["determine markers of the coins and the background",
                                         "Copyright 1998 Springer Verlag"]
    assert [c.supported for c in checks] == [True, False]


def test_unknown_engine_is_a_clear_error():
    with pytest.raises(OcrError, match="unknown OCR engine"):
        open_ocr("abbyy")


def test_find_quotes_leaves_apostrophes_alone():
    assert find_quotes("The cat's sign says 'CLOSED' and “Back at 5”; it's \"Joe's Diner\".") == [
        "CLOSED", "Back at 5", "Joe's Diner"]


def test_quote_support_is_fuzzy_about_ocr_noise():
    ocr = "Region-basedsegmentation\nLet us first determine markers of the coins and the\nbackground.These markers"
    assert quote_support("Let us first determine markers", ocr) == 1.0
    assert quote_support("Region-based segmentation", ocr) > 0.8  # OCR lost the space
    assert quote_support("Watershed transform", ocr) < 0.6
