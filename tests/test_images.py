"""Every kind of broken or unusual image file: a usable RGB image or a clear ImageError."""

import io

import numpy as np
import pytest
from PIL import Image

from scalecap.images import ImageError, decode_image


def encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def test_rgb_png_round_trip():
    img, notes = decode_image(encode(Image.new("RGB", (32, 24), (10, 20, 30)), "PNG"))
    assert img.mode == "RGB" and img.size == (32, 24) and notes == []


@pytest.mark.parametrize("data,kind", [
    (b"", "empty_file"),
    (b"this is a text file, not a jpeg\n", "not_an_image"),
])
def test_unreadable_bytes(data, kind):
    with pytest.raises(ImageError) as exc:
        decode_image(data)
    assert exc.value.kind == kind


def test_truncated_jpeg_is_corrupt():
    data = encode(Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)), "JPEG")
    with pytest.raises(ImageError) as exc:
        decode_image(data[: len(data) // 2])
    assert exc.value.kind == "corrupt"


def test_cmyk_sixteen_bit_and_palette_alpha_become_rgb():
    cmyk, notes = decode_image(encode(Image.new("CMYK", (8, 8), (0, 255, 255, 0)), "JPEG"))
    assert cmyk.mode == "RGB" and "CMYK" in notes[0]
    arr = (np.arange(64, dtype=np.uint16).reshape(8, 8) * 1000)
    grey16, _ = decode_image(encode(Image.fromarray(arr), "PNG"))
    assert grey16.mode == "RGB" and grey16.getextrema()[0] == (0, 255)
    pal = Image.new("P", (8, 8))
    pal.putpalette([255, 0, 0] * 256)
    pal.info["transparency"] = 0
    rgb, _ = decode_image(encode(pal, "PNG", transparency=0))
    assert rgb.mode == "RGB" and rgb.getpixel((0, 0)) == (255, 255, 255)  # transparent -> white


def test_animated_gif_uses_first_frame():
    frames = [Image.new("RGB", (16, 16), c) for c in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:], duration=50, loop=0)
    img, notes = decode_image(buf.getvalue())
    assert img.getpixel((0, 0))[0] > 200 and any("first frame" in n for n in notes)


def test_decompression_bomb_is_refused_before_decoding():
    big = encode(Image.new("L", (5000, 5000)), "PNG")  # 25 Mpx, compresses to a few KB
    assert len(big) < 100_000
    with pytest.raises(ImageError) as exc:
        decode_image(big, max_pixels=10_000_000)
    assert exc.value.kind == "too_large"
