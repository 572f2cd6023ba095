"""``scalecap caption --config FILE``: roles and settings from TOML or YAML, the command line on top."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from scalecap.cli import app

runner = CliRunner()


def toml_config(vlm: str, llm: str, tiny_settings: dict) -> str:
    settings = "\n".join(f"{k} = {v}" for k, v in tiny_settings.items())
    return f'''
[models.vlm]
backend = "hf"
model = "{vlm}"
dtype = "float32"

[models.llm]
model = "{llm}"

[roles]
captioner = "vlm"
writer = "llm"

[settings]
budget = 3
tau = -1.0
writer_repetition_penalty = 1.2
{settings}
'''


def yaml_config(vlm: str, llm: str, tiny_settings: dict) -> str:
    settings = "\n".join(f"  {k}: {v}" for k, v in tiny_settings.items())
    return f'''
models:
  vlm: {{backend: hf, model: "{vlm}", dtype: float32}}
  llm:
    model: "{llm}"
roles:
  captioner: vlm
  writer: llm
settings:
  budget: 3
  tau: -1.0
  writer_repetition_penalty: 1.2
{settings}
'''


@pytest.mark.slow
@pytest.mark.parametrize("suffix", [".toml", ".yaml"])
def test_roles_and_settings_come_from_the_file_and_the_command_line_wins(suffix, tmp_path, sample_images,
                                                                          tiny_models, tiny_settings):
    vlm, llm = str(tiny_models["qwen2vl"]), str(tiny_models["qwen2"])
    make = toml_config if suffix == ".toml" else yaml_config
    config = tmp_path / f"roles{suffix}"
    config.write_text(make(vlm, llm, tiny_settings))
    out = tmp_path / "out.jsonl"
    res = runner.invoke(app, ["caption", str(sample_images["chelsea"]), "-o", str(out), "--config", str(config),
                              "--budget", "1", "--set", "max_tokens_answer=16"])
    assert res.exit_code == 0, res.output
    (record,) = [json.loads(line) for line in out.read_text().splitlines()]
    assert record["status"] == "ok"
    fp = record["fingerprint"]
    assert fp["models"]["captioner"] == {"backend": "hf", "model": vlm, "dtype": "float32"}
    assert fp["models"]["scorer"] == fp["models"]["captioner"]  # the scorer is the captioner unless set
    assert fp["models"]["writer"]["model"] == llm
    s = fp["settings"]
    assert (fp["tau"], s["writer_repetition_penalty"], s["max_tokens_caption"]) == (-1.0, 1.2, tiny_settings["max_tokens_caption"])
    assert (fp["budget"], s["max_tokens_answer"]) == (1, 16)  # the command line over the file
    assert len({q["object"] for q in record["questions"]}) <= 1
    assert all(a["kept"] for a in record["sentences"])  # tau -1 from the file: every sentence kept


@pytest.mark.parametrize(("name", "text", "message"), [
    ("unknown.toml", '[models.m]\nmodel = "x"\nflavour = "mint"\n[roles]\nmodel = "m"\n', "flavour"),
    ("norole.toml", '[models.m]\nmodel = "x"\n[roles]\ncaptioner = "m"\n', "no model for role 'writer'"),
    ("typo.yaml", 'models:\n  m: {model: x}\nroles:\n  model: n\n', "names model 'n', which is not in [models]"),
    ("broken.toml", '[models.m\nmodel = "x"\n', "config file"),
    ("badsetting.yaml", 'models:\n  m: {model: x}\nroles: {model: m}\nsettings: {tau: high}\n', "tau"),
])
def test_a_bad_config_file_is_a_one_line_error_before_any_model_loads(tmp_path, name, text, message):
    config = tmp_path / name
    config.write_text(text)
    res = runner.invoke(app, ["caption", str(tmp_path), "-o", str(tmp_path / "o.jsonl"), "--config", str(config)],
                        env={"COLUMNS": "300"})
    assert res.exit_code == 2, res.output
    lines = [line for line in res.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: config file") and message in lines[0], res.output
    assert not (tmp_path / "o.jsonl").exists()


def test_a_missing_config_file_is_an_error(tmp_path):
    res = runner.invoke(app, ["caption", str(tmp_path), "-o", str(tmp_path / "o.jsonl"),
                              "--config", str(tmp_path / "nowhere.toml")])
    assert res.exit_code == 2 and "nowhere.toml" in res.output and "Traceback" not in res.output
