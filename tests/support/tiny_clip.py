"""Builds a small open_clip model with random weights and saves it as a local open_clip folder.

Random weights still map an image to the same vector every time and keep mild crops close to
their source, which is what the round-trip tests need; they give no semantic quality.
"""

from __future__ import annotations

import json
from pathlib import Path

TINY_CONFIG = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "head_width": 32, "patch_size": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}


def build_tiny_clip(folder: Path, seed: int = 0) -> Path:
    """Write open_clip_config.json + open_clip_model.safetensors into `folder`; return the folder."""
    import torch
    from safetensors.torch import save_file

    from services.torch_compat import import_open_clip

    open_clip = import_open_clip()
    folder.mkdir(parents=True, exist_ok=True)
    config = {"model_cfg": TINY_CONFIG, "preprocess_cfg": {}}
    (folder / "open_clip_config.json").write_text(json.dumps(config))
    torch.manual_seed(seed)
    model = open_clip.CLIP(**TINY_CONFIG)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(folder / "open_clip_model.safetensors"))
    return folder
