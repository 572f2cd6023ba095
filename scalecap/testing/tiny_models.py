"""Tiny random-initialised models with real architectures, built offline in seconds.

No model hub is reachable in CI (nor on many users' build machines), yet every code path that
touches a model must run on real model code: real chat templates, real image processors, real
log-probs and batching. These builders make such models from code: a byte-level BPE tokenizer
trained on local text (the Python standard library's sources plus caption-like sentences), the
Qwen special tokens and chat templates, and 2-layer networks with the genuine Qwen2-VL,
Qwen2.5-VL, Qwen2, LLaVA and Idefics3 classes. Their text is gibberish by design.

Dimensions are chosen for vLLM's CPU kernels too (head_dim 64), so the same folders can be served
by a real vLLM server in the tests.
"""

from __future__ import annotations

import glob
import json
import os
import random
import sysconfig
from pathlib import Path

#: Bump when what the builders produce changes, so cached folders are rebuilt.
TINY_MODELS_VERSION = "1"

KINDS = ("qwen2vl", "qwen25vl", "qwen3vl", "qwen2", "llava", "idefics3")
DEFAULT_KINDS = ("qwen2vl", "qwen2", "llava")

# The Qwen2 pre-tokenisation pattern (contractions, letters, single digits, punctuation runs, spaces).
_PRETOKENIZE = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"""
    r"""|\s*[\r\n]+|\s+(?!\S)|\s+"""
)
_QWEN_SPECIAL = [
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
    "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>",
    "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>",
]

# Chat templates written for these models: a system turn first (defaulting to the usual Qwen one),
# the image placeholder before the text, as in Qwen2-VL's own template.
_QWEN_VL_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' or 'image' in part or 'image_url' in part %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif part['type'] == 'video' or 'video' in part %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in part %}{{ part['text'] }}{% endif %}{% endfor %}{% endif %}"
    "{% if not (loop.last and message['role'] == 'assistant' and continue_final_message) %}<|im_end|>\n{% endif %}"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
_QWEN_TEXT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}{% if 'text' in part %}{{ part['text'] }}{% endif %}{% endfor %}{% endif %}"
    "{% if not (loop.last and message['role'] == 'assistant' and continue_final_message) %}<|im_end|>\n{% endif %}"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
_LLAVA_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}{{ message['content'] if message['content'] is string else message['content'][0]['text'] }}\n"
    "{% else %}{% if message['role'] == 'user' %}USER: {% else %}ASSISTANT: {% endif %}"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<image>\n{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}{% endfor %}{% endif %}"
    "{% if message['role'] == 'user' %} {% elif not (loop.last and continue_final_message) %}<|endoftext|>{% endif %}"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)
_IDEFICS3_TEMPLATE = (
    "<|im_start|>{% for message in messages %}{{ message['role'] | capitalize }}"
    "{% if message['content'] is string %}: {{ message['content'] }}"
    "{% else %}{% if message['content'][0]['type'] == 'image' %}:{% else %}: {% endif %}"
    "{% for part in message['content'] %}{% if part['type'] == 'text' %}{{ part['text'] }}"
    "{% elif part['type'] == 'image' %}<image>{% endif %}{% endfor %}{% endif %}"
    "{% if not (loop.last and message['role'] == 'assistant' and continue_final_message) %}<end_of_utterance>\n{% endif %}"
    "{% endfor %}{% if add_generation_prompt %}Assistant:{% endif %}"
)

_TEXT_DIMS = dict(hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=2,
                  num_key_value_heads=1, max_position_embeddings=4096)
_MIN_PIXELS, _MAX_PIXELS = 56 * 56, 448 * 448


def _training_text(max_chars: int = 3_000_000):
    rng = random.Random(0)
    things = ["a cat", "a dog", "an astronaut", "a red car", "two people", "a coffee cup", "a rocket",
              "a horse", "a motorcycle", "the moon", "a clock", "a brick wall", "coins", "grass", "a flag"]
    places = ["on a wooden table", "near a window", "in front of a blue sky", "on the street", "under a tree"]
    for _ in range(5000):
        yield (f"The image shows {rng.choice(things)} {rng.choice(places)}. "
               f"Describe more details about the {rng.choice(things).split()[-1]}.")
    seen = 0
    for path in sorted(glob.glob(os.path.join(sysconfig.get_paths()["stdlib"], "*.py"))):
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        seen += len(text)
        yield text
        if seen > max_chars:
            break


def build_tokenizer(chat_template: str, vocab_size: int = 4096, pad_to: int | None = None):
    """A Qwen2Tokenizer (byte-level BPE) trained locally, with the Qwen special tokens.

    ``pad_to`` adds filler tokens until the vocabulary has that many entries (used by the
    benchmark that needs a realistic 152k vocabulary).
    """
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import Qwen2Tokenizer

    bpe = Tokenizer(models.BPE(unk_token=None, continuing_subword_prefix="", end_of_word_suffix="",
                               fuse_unk=False, byte_fallback=False))
    bpe.normalizer = normalizers.NFC()
    bpe.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(_PRETOKENIZE), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(_training_text(), trainer=trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=_QWEN_SPECIAL[:1], show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    state = json.loads(bpe.to_str())
    merges = [tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m) for m in state["model"]["merges"]]
    tok = Qwen2Tokenizer(vocab=state["model"]["vocab"], merges=merges, unk_token=None,
                         eos_token="<|im_end|>", pad_token="<|endoftext|>")
    tok.add_tokens(_QWEN_SPECIAL[1:], special_tokens=True)
    if pad_to and len(tok) < pad_to:
        tok.add_tokens([f"<|filler_{i}|>" for i in range(pad_to - len(tok))], special_tokens=True)
    tok.chat_template = chat_template
    return tok


def _generation_config(eos_ids: list[int], pad_id: int):
    from transformers import GenerationConfig

    return GenerationConfig(eos_token_id=eos_ids, pad_token_id=pad_id, bos_token_id=pad_id, do_sample=False)


def _build_qwen_vl(kind: str, tok):
    import torch
    from transformers import Qwen2VLImageProcessor

    ids = {t: tok.convert_tokens_to_ids(t) for t in _QWEN_SPECIAL}
    text = dict(_TEXT_DIMS, vocab_size=len(tok), rope_theta=1_000_000.0, rms_norm_eps=1e-6,
                rope_scaling={"type": "mrope", "mrope_section": [8, 12, 12]},
                bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"])
    common = dict(image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
                  vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
                  tie_word_embeddings=False)
    patch = 14
    if kind == "qwen2vl":
        from transformers import Qwen2VLConfig as Config, Qwen2VLForConditionalGeneration as Model
        vision = dict(depth=2, embed_dim=64, hidden_size=128, num_heads=2, mlp_ratio=2, patch_size=14,
                      spatial_merge_size=2, temporal_patch_size=2, in_channels=3)
    elif kind == "qwen3vl":
        from transformers import Qwen3VLConfig as Config, Qwen3VLForConditionalGeneration as Model
        patch = 16
        text = dict(text, head_dim=64, rope_scaling=None,
                    rope_parameters={"rope_type": "default", "rope_theta": 5_000_000.0,
                                     "mrope_section": [12, 10, 10], "mrope_interleaved": True})
        vision = dict(depth=2, hidden_size=64, intermediate_size=128, num_heads=2, patch_size=16, out_hidden_size=128,
                      spatial_merge_size=2, temporal_patch_size=2, in_channels=3, num_position_embeddings=576,
                      deepstack_visual_indexes=[1])
    else:
        from transformers import Qwen2_5_VLConfig as Config, Qwen2_5_VLForConditionalGeneration as Model
        vision = dict(depth=2, hidden_size=64, out_hidden_size=128, intermediate_size=128, num_heads=2,
                      patch_size=14, spatial_merge_size=2, temporal_patch_size=2, in_channels=3,
                      window_size=112, fullatt_block_indexes=[1], tokens_per_second=2)
    torch.manual_seed(0)
    model = Model(Config(text_config=text, vision_config=vision, **common)).eval()
    model.generation_config = _generation_config([ids["<|im_end|>"], ids["<|endoftext|>"]], ids["<|endoftext|>"])
    image_processor = Qwen2VLImageProcessor(min_pixels=_MIN_PIXELS, max_pixels=_MAX_PIXELS, patch_size=patch,
                                            temporal_patch_size=2, merge_size=2)
    try:  # the video processor exists only where torchvision imports; images do not need it
        if kind == "qwen3vl":
            from transformers import Qwen3VLProcessor as Processor, Qwen3VLVideoProcessor
            video = Qwen3VLVideoProcessor(size={"shortest_edge": _MIN_PIXELS, "longest_edge": _MAX_PIXELS},
                                          patch_size=patch)
        else:
            from transformers import Qwen2VLProcessor as Processor, Qwen2VLVideoProcessor
            video = Qwen2VLVideoProcessor(min_pixels=_MIN_PIXELS, max_pixels=_MAX_PIXELS)
    except (ImportError, AttributeError):
        raise RuntimeError(
            "building a Qwen-VL processor with transformers >= 5 needs an importable torchvision "
            "(see scripts/patch_torchvision_cpu.sh for CPU-only machines)") from None
    processor = Processor(image_processor=image_processor, tokenizer=tok, video_processor=video,
                          chat_template=_QWEN_VL_TEMPLATE)
    return model, processor


def _build_qwen2_text(tok):
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    pad, eos = tok.convert_tokens_to_ids("<|endoftext|>"), tok.convert_tokens_to_ids("<|im_end|>")
    cfg = Qwen2Config(**_TEXT_DIMS, vocab_size=len(tok), rope_theta=1_000_000.0, rms_norm_eps=1e-6,
                      tie_word_embeddings=True, bos_token_id=pad, eos_token_id=eos, pad_token_id=pad)
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(cfg).eval()
    model.generation_config = _generation_config([eos, pad], pad)
    return model, tok


def _build_llava():
    import torch
    from transformers import (CLIPImageProcessor, CLIPVisionConfig, LlavaConfig, LlavaForConditionalGeneration,
                              LlavaProcessor, Qwen2Config)

    tok = build_tokenizer(_LLAVA_TEMPLATE)
    tok.add_tokens(["<image>"], special_tokens=True)
    tok.eos_token = "<|endoftext|>"
    eos = tok.convert_tokens_to_ids("<|endoftext|>")
    vision = CLIPVisionConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
                              image_size=224, patch_size=14, projection_dim=64)
    text = Qwen2Config(**_TEXT_DIMS, vocab_size=len(tok), bos_token_id=eos, eos_token_id=eos, pad_token_id=eos)
    cfg = LlavaConfig(vision_config=vision, text_config=text, image_token_index=tok.convert_tokens_to_ids("<image>"),
                      vision_feature_layer=-2, vision_feature_select_strategy="default",
                      projector_hidden_act="gelu", tie_word_embeddings=False)
    torch.manual_seed(0)
    model = LlavaForConditionalGeneration(cfg).eval()
    model.generation_config = _generation_config([eos], eos)
    processor = LlavaProcessor(
        image_processor=CLIPImageProcessor(size={"shortest_edge": 224}, crop_size={"height": 224, "width": 224}),
        tokenizer=tok, patch_size=14, vision_feature_select_strategy="default", chat_template=_LLAVA_TEMPLATE,
        image_token="<image>", num_additional_image_tokens=1)
    return model, processor


def _build_idefics3():
    import torch
    from transformers import (Idefics3Config, Idefics3ForConditionalGeneration, Idefics3ImageProcessor,
                              Idefics3Processor, Idefics3VisionConfig, LlamaConfig)

    tok = build_tokenizer(_IDEFICS3_TEMPLATE)
    tok.add_tokens(["<fake_token_around_image>", "<image>", "<global-img>", "<end_of_utterance>"]
                   + [f"<row_{r}_col_{c}>" for r in range(1, 7) for c in range(1, 7)], special_tokens=True)
    tok.eos_token = "<end_of_utterance>"
    eos, pad = tok.convert_tokens_to_ids("<end_of_utterance>"), tok.convert_tokens_to_ids("<|endoftext|>")
    vision = Idefics3VisionConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                  num_attention_heads=2, image_size=112, patch_size=14)
    text = LlamaConfig(**_TEXT_DIMS, vocab_size=len(tok), bos_token_id=pad, eos_token_id=eos, pad_token_id=pad)
    cfg = Idefics3Config(vision_config=vision, text_config=text, scale_factor=2, pad_token_id=pad,
                         image_token_id=tok.convert_tokens_to_ids("<image>"), tie_word_embeddings=False)
    torch.manual_seed(0)
    model = Idefics3ForConditionalGeneration(cfg).eval()
    model.generation_config = _generation_config([eos], pad)
    processor = Idefics3Processor(
        image_processor=Idefics3ImageProcessor(size={"longest_edge": 224}, max_image_size={"longest_edge": 112}),
        tokenizer=tok, image_seq_len=16, chat_template=_IDEFICS3_TEMPLATE)
    return model, processor


def build_tiny_model(kind: str, out_dir: str | os.PathLike[str], vocab_pad_to: int | None = None) -> Path:
    """Build one tiny model of ``kind`` (see KINDS) and save it (model + processor/tokenizer) to out_dir."""
    if kind not in KINDS:
        raise ValueError(f"unknown tiny model kind {kind!r}; choose from {', '.join(KINDS)}")
    out = Path(out_dir)
    if kind in ("qwen2vl", "qwen25vl", "qwen3vl"):
        model, processor = _build_qwen_vl(kind, build_tokenizer(_QWEN_VL_TEMPLATE, pad_to=vocab_pad_to))
    elif kind == "qwen2":
        model, processor = _build_qwen2_text(build_tokenizer(_QWEN_TEXT_TEMPLATE, pad_to=vocab_pad_to))
    elif kind == "llava":
        model, processor = _build_llava()
    else:
        model, processor = _build_idefics3()
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    (out / "SCALECAP_TINY_MODEL.json").write_text(json.dumps(
        {"kind": kind, "version": TINY_MODELS_VERSION, "random_weights": True,
         "note": "random-initialised test model built by scalecap; its text is gibberish by design"}, indent=2))
    return out


def build_tiny_models(root: str | os.PathLike[str], kinds: tuple[str, ...] = DEFAULT_KINDS,
                      force: bool = False) -> dict[str, Path]:
    """Build (or reuse) ``root/tiny-KIND`` for each kind; returns kind -> folder."""
    root = Path(root)
    done = {}
    for kind in kinds:
        folder = root / f"tiny-{kind}"
        marker = folder / "SCALECAP_TINY_MODEL.json"
        fresh = marker.is_file() and json.loads(marker.read_text()).get("version") == TINY_MODELS_VERSION
        if force or not fresh:
            build_tiny_model(kind, folder)
        done[kind] = folder
    return done


def default_cache_dir() -> Path:
    base = os.environ.get("SCALECAP_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "scalecap")
    return Path(base) / f"tiny-models-v{TINY_MODELS_VERSION}"


def build_digit_model(source: str | os.PathLike[str], out_dir: str | os.PathLike[str]) -> Path:
    """A copy of a tiny model whose greedy output is digits only, so its text always re-tokenises to
    the ids it generated (the tokenizers here split numbers into single digits).

    A random model mostly writes non-canonical token sequences (byte fragments, merges its tokenizer
    would not make): a generation's log-probs can then never stand for its text's (backends/reuse.py),
    and a test of that reuse would never reach it. Here every non-digit row of the LM head is zero
    and the digit rows come in opposite pairs, so some digit always has a logit >= 0 and wins.
    """
    import shutil

    import torch
    from safetensors.torch import load_file, save_file
    from transformers import AutoTokenizer

    src, out = Path(source), Path(out_dir)
    shutil.copytree(src, out, dirs_exist_ok=True)
    digits = [AutoTokenizer.from_pretrained(src).convert_tokens_to_ids(str(d)) for d in range(10)]
    weights = load_file(str(src / "model.safetensors"))
    head = weights["lm_head.weight"]
    new = torch.zeros_like(head)
    for a, b in zip(digits[:5], digits[5:]):
        new[a], new[b] = head[a] * 8, -head[a] * 8
    weights["lm_head.weight"] = new
    save_file(weights, str(out / "model.safetensors"), metadata={"format": "pt"})
    return out
