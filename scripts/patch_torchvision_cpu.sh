#!/usr/bin/env bash
# PyPI's torchvision 0.28.0 is a CUDA build; its C extension cannot load beside torch 2.13.0+cpu and
# it then registers fake kernels for ops that do not exist ("operator torchvision::nms does not
# exist"). Sending those two registrations through torchvision's own guarded helper makes
# `import torchvision` work (pure-PyTorch transforms on, C ops off), which is all the Qwen-VL
# processors and vLLM's Qwen2-VL model code need on a CPU machine. Run inside the activated venv.
set -euo pipefail
pip install -q --no-deps torchvision==0.28.0
TV=$(python -c "import importlib.util as u; print(u.find_spec('torchvision').submodule_search_locations[0])")
sed -i 's/^@torch.library.register_fake("torchvision::nms")/@register_meta("nms")/; s/^@torch.library.register_fake("torchvision::qnms")/@register_meta("qnms")/' "$TV/_meta_registrations.py"
python -c "import torchvision.transforms.v2.functional"
