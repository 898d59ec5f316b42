"""Import helpers for the torch stack.

On CPU-only machines ShopLens installs PyTorch's CPU wheel beside PyPI's torchvision wheel, which
is built against a different torch and whose compiled detection operators (nms, roi_align, …) do
not register. open_clip and the offline embedder only need torchvision's pure-Python image
transforms, so when (and only when) the real operators are missing we declare their schemas so
that `import torchvision` succeeds; calling a detection operator still fails loudly.
"""

from __future__ import annotations

import importlib
import sys
import threading
from types import ModuleType

_lock = threading.Lock()
_ready = False

# Schemas torchvision's Python code registers fake kernels for at import time.
_OPERATOR_SCHEMAS = (
    "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "roi_align(Tensor input, Tensor rois, float spatial_scale, SymInt pooled_height, SymInt pooled_width, int "
    "sampling_ratio, bool aligned) -> Tensor",
    "_roi_align_backward(Tensor grad, Tensor rois, float spatial_scale, SymInt pooled_height, SymInt pooled_width, "
    "SymInt batch_size, SymInt channels, SymInt height, SymInt width, int sampling_ratio, bool aligned) -> Tensor",
    "ps_roi_align(Tensor input, Tensor rois, float spatial_scale, SymInt pooled_height, SymInt pooled_width, int "
    "sampling_ratio) -> (Tensor, Tensor)",
    "ps_roi_pool(Tensor input, Tensor rois, float spatial_scale, SymInt pooled_height, SymInt pooled_width) -> "
    "(Tensor, Tensor)",
    "roi_pool(Tensor input, Tensor rois, float spatial_scale, SymInt pooled_height, SymInt pooled_width) -> "
    "(Tensor, Tensor)",
    "deform_conv2d(Tensor input, Tensor weight, Tensor offset, Tensor mask, Tensor bias, SymInt stride_h, SymInt "
    "stride_w, SymInt pad_h, SymInt pad_w, SymInt dilation_h, SymInt dilation_w, SymInt groups, SymInt offset_groups, bool use_mask) -> Tensor",
)
_keep: list[object] = []  # torch.library.Library objects must stay alive


def _drop_partial_import() -> None:
    for name in [n for n in sys.modules if n == "torchvision" or n.startswith("torchvision.")]:
        del sys.modules[name]


def ensure_torchvision() -> None:
    """Make `import torchvision` work; idempotent and thread-safe."""
    global _ready
    with _lock:
        if _ready:
            return
        try:
            importlib.import_module("torchvision")
        except RuntimeError as exc:
            if "torchvision::" not in str(exc):
                raise
            _drop_partial_import()
            import torch

            lib = torch.library.Library("torchvision", "DEF")
            for schema in _OPERATOR_SCHEMAS:
                try:
                    lib.define(schema)
                except RuntimeError:
                    pass  # this one did register
            _keep.append(lib)
            importlib.import_module("torchvision")
        _ready = True


def import_open_clip() -> ModuleType:
    ensure_torchvision()
    return importlib.import_module("open_clip")
