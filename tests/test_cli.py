"""The command line as a user runs it: bad files, exit codes, tiny-models.

(Resume through the CLI: tests/io/test_resume_kill.py; a torn last line: tests/io/test_outputs.py;
the demo: tests/test_demo.py; config files: tests/test_cli_config.py.)
"""

import io
import json

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from scalecap.cli import app

pytestmark = pytest.mark.slow
runner = CliRunner()


def save(img, path, **kw):
    img.save(path, **kw)
    return path


@pytest.fixture()
def messy_folder(tmp_path, sample_images):
    d = tmp_path / "images dir ünï"
    d.mkdir()
    (d / "good photo.png").write_bytes(sample_images["chelsea"].read_bytes())
    (d / "empty.jpg").write_bytes(b"")
    (d / "notes.jpg").write_text("not an image at all\n")
    jpeg = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(jpeg, "JPEG")
    (d / "truncated.jpg").write_bytes(jpeg.getvalue()[:300])
    save(Image.new("CMYK", (80, 60), (0, 120, 255, 0)), d / "cmyk.jpg")
    save(Image.fromarray((np.arange(4800, dtype=np.uint16).reshape(60, 80) * 13)), d / "grey16.png")
    pal = Image.new("P", (80, 60))
    pal.putpalette([0, 128, 0] * 256)
    save(pal, d / "palette_alpha.png", transparency=0)
    frames = [Image.new("RGB", (64, 64), c) for c in ((255, 0, 0), (0, 0, 255))]
    frames[0].save(d / "animated.gif", save_all=True, append_images=frames[1:], duration=40, loop=0)
    save(Image.new("L", (9000, 9000)), d / "bomb.png")  # 81 Mpx > the 64 Mpx default limit
    return d


def caption_args(tiny_models, tiny_settings, *extra):
    vlm = str(tiny_models["qwen2vl"])
    sets = [a for k, v in tiny_settings.items() for a in ("--set", f"{k}={v}")]
    return ["caption", "--captioner", vlm, "--scorer", vlm, "--writer", str(tiny_models["qwen2"]),
            "--budget", "1", "--concurrency", "4", *sets, *extra]


def read(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_bad_files_become_records_and_the_exit_code_tells(messy_folder, tmp_path, tiny_models, tiny_settings):
    out = tmp_path / "out.jsonl"
    res = runner.invoke(app, caption_args(tiny_models, tiny_settings, str(messy_folder), "-o", str(out)))
    assert res.exit_code == 1, res.output
    records = {r["id"]: r for r in read(out)}
    assert len(records) == 9
    ok = {i for i, r in records.items() if r["status"] == "ok"}
    assert ok == {"good photo.png", "cmyk.jpg", "grey16.png", "palette_alpha.png", "animated.gif"}
    kinds = {i: r["error_kind"] for i, r in records.items() if r["status"] == "failed"}
    assert kinds == {"empty.jpg": "empty_file", "notes.jpg": "not_an_image", "truncated.jpg": "corrupt",
                     "bomb.png": "too_large"}
    assert any("first frame" in n for n in records["animated.gif"]["notes"])


def test_missing_role_is_a_clear_error(tmp_path):
    res = runner.invoke(app, ["caption", str(tmp_path), "-o", str(tmp_path / "o.jsonl")])
    assert res.exit_code == 2 and "no model for" in res.output


def test_tiny_models_command_builds_loadable_folders(tmp_path):
    res = runner.invoke(app, ["tiny-models", str(tmp_path / "m"), "--kinds", "qwen2"])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "m" / "tiny-qwen2" / "model.safetensors").is_file()
    assert runner.invoke(app, ["tiny-models", str(tmp_path / "m"), "--kinds", "nope"]).exit_code == 2


def test_user_errors_are_one_line_messages(tmp_path, tiny_models):
    vlm = str(tiny_models["qwen2vl"])
    bad = runner.invoke(app, ["caption", str(tmp_path), "-o", str(tmp_path / "o.jsonl"), "--model", vlm,
                              "--budget", "abc", "--score-mode", "x"])
    assert bad.exit_code == 2 and "budget:" in bad.output and "score_mode:" in bad.output
    assert "Traceback" not in bad.output
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    unwritable = runner.invoke(app, ["caption", str(tmp_path), "-o", str(blocker / "o.jsonl"), "--model", vlm])
    assert unwritable.exit_code == 2 and "error:" in unwritable.output
    empty = tmp_path / "empty"
    empty.mkdir()
    nothing = runner.invoke(app, ["caption", str(empty), "-o", str(tmp_path / "e.jsonl"), "--model", vlm])
    assert nothing.exit_code == 2 and "no images found" in nothing.output
    missing = runner.invoke(app, ["caption", str(empty), "-o", str(tmp_path / "m.jsonl"), "--model",
                                  str(tmp_path / "no-such-model")])
    assert missing.exit_code == 2 and "no such folder" in missing.output


def test_piped_output_is_never_wrapped(tmp_path):
    """Rich wraps at 80 columns (or COLUMNS) when stdout is a pipe; a message must stay one line whatever
    the width and the length of the paths in it, or a script grepping a log misses it."""
    deep = tmp_path / ("a-folder-with-a-long-name-" * 4) / "no-such-model"
    empty = tmp_path / "empty"
    empty.mkdir()
    res = runner.invoke(app, ["caption", str(empty), "-o", str(tmp_path / "m.jsonl"), "--model", str(deep)],
                        env={"COLUMNS": "30"})
    assert res.exit_code == 2
    lines = [line for line in res.output.splitlines() if line.strip()]
    assert len(lines) == 1, res.output
    assert str(deep) in lines[0] and "no such folder" in lines[0]
