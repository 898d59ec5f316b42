"""open_clip (CLIP and friends): one shared space for photos and text.

`SHOPLENS_OPENCLIP_MODEL` is an open_clip architecture (`ViT-B-32`), `hf-hub:org/repo` or
`local-dir:/path` (open_clip_config.json plus weights); `SHOPLENS_OPENCLIP_PRETRAINED` is a
pretrained tag (downloaded once into the Hugging Face cache) or a local checkpoint file for
machines that cannot download.

The default ViT-B-32 (laion2b) reads English only: open_clip's multilingual benchmark gives it
3.9 % R@10 on Chinese, against 86 % for `xlm-roberta-base-ViT-B-32` / `laion5b_s13b_b90k`, whose
text tower is XLM-RoBERTa. `SHOPLENS_OPENCLIP_LANGUAGES=multilingual` picks that one while the
model settings are left at their defaults; its text tower runs on Hugging Face `transformers`
(the `multilingual` extra).
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import logging
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from services.embedders.base import Embedder, EmbedderIdentity, EmbedderUnavailable
from services.settings import Settings
from services.torch_compat import import_open_clip

log = logging.getLogger(__name__)

ENGLISH_MODEL = (Settings.model_fields["openclip_model"].default, Settings.model_fields["openclip_pretrained"].default)
MULTILINGUAL_MODEL = ("xlm-roberta-base-ViT-B-32", "laion5b_s13b_b90k")


def model_and_weights(settings: Settings) -> tuple[str, str | None]:
    """The open_clip model and pretrained tag (or checkpoint) the settings ask for. A model named
    explicitly wins over the language setting: it is the user's choice."""
    chosen = (settings.openclip_model, settings.openclip_pretrained)
    if settings.openclip_languages == "multilingual" and chosen == ENGLISH_MODEL:
        return MULTILINGUAL_MODEL
    return chosen


def resolve_device(requested: str) -> str:
    """`auto` means CUDA when a GPU is visible, else CPU."""
    import torch

    if requested != "auto":
        return requested
    return "cuda" if torch.cuda.is_available() else "cpu"


def file_fingerprint(path: Path) -> str:
    """A cheap content fingerprint (size + head + tail) so identity follows the weights, not the path."""
    size = path.stat().st_size
    digest = hashlib.sha256(str(size).encode())
    with path.open("rb") as fh:
        digest.update(fh.read(4 << 20))
        if size > 8 << 20:
            fh.seek(-(4 << 20), 2)
            digest.update(fh.read())
    return digest.hexdigest()[:16]


def _weights_id(model_name: str, pretrained: str | None) -> str:
    if model_name.startswith("local-dir:"):
        folder = Path(model_name.removeprefix("local-dir:")).expanduser()
        files = sorted(folder.glob("*.safetensors")) + sorted(folder.glob("*.bin")) + sorted(folder.glob("*.pt*"))
        return f"local-dir:{file_fingerprint(files[0])}" if files else "local-dir:random"
    if model_name.startswith("hf-hub:"):
        return model_name
    if pretrained and Path(pretrained).expanduser().is_file():
        return f"{model_name}/file:{file_fingerprint(Path(pretrained).expanduser())}"
    return f"{model_name}/{pretrained or 'random'}"


CHECKPOINT_SUFFIXES = {".pt", ".pth", ".bin", ".safetensors"}


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _packaged_config(architecture: str) -> dict[str, Any] | None:
    """open_clip's own `model_configs/<name>.json`, found without importing open_clip (which imports torch)."""
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        return None
    name = architecture.replace("/", "-")  # what open_clip's factory looks up
    for folder in spec.submodule_search_locations:
        config = _read_json(Path(folder) / "model_configs" / f"{name}.json")
        if config is not None:
            return config
    return None


def _hub_config(repo: str) -> dict[str, Any] | None:
    """An hf-hub model's config when it is already in the local Hugging Face cache, else None."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    try:
        cached = try_to_load_from_cache(repo, "open_clip_config.json")
    except ValueError:  # not a valid repo id (HFValidationError): the build would fail too
        return None
    return _read_json(Path(cached)) if isinstance(cached, str) else None


def model_config(model_name: str) -> dict[str, Any] | None:
    """The config open_clip's factory will build this model name from, read without importing it.

    The same lookups the factory does: `local-dir:` requires `model_cfg` in open_clip_config.json,
    `hf-hub:` reads the repo's config (here only from the cache: offline it is unknowable), an
    architecture name reads the JSON shipped in the package.
    """
    if model_name.startswith("local-dir:"):
        wrapper = _read_json(Path(model_name.removeprefix("local-dir:")).expanduser() / "open_clip_config.json")
        config = wrapper.get("model_cfg") if wrapper else None
    elif model_name.startswith("hf-hub:"):
        wrapper = _hub_config(model_name.removeprefix("hf-hub:"))
        config = wrapper.get("model_cfg", wrapper) if wrapper else None
    else:
        config = _packaged_config(model_name)
        if config is not None and not all(k in config for k in ("embed_dim", "vision_cfg", "text_cfg")):
            config = None  # open_clip skips such files too
    return config if isinstance(config, dict) else None


def config_embed_dim(model_name: str) -> int | None:
    """The shared embedding size open_clip will build for this model name (its config's `embed_dim`)."""
    config = model_config(model_name)
    try:
        return int(config["embed_dim"]) if config else None
    except (KeyError, TypeError, ValueError):
        return None


def needs_transformers(model_name: str) -> bool:
    """Whether the model's text tower is a Hugging Face model (XLM-RoBERTa and friends)."""
    config = model_config(model_name)
    text_cfg = config.get("text_cfg") if config else None
    return isinstance(text_cfg, dict) and bool(text_cfg.get("hf_model_name"))


def ensure_weights_reachable(model_name: str, tag: str) -> None:
    """Fail in seconds, not after the hub client's retries, when a tag's weights cannot be had."""
    import os

    import httpx
    from huggingface_hub import constants, try_to_load_from_cache

    open_clip = import_open_clip()
    cfg = open_clip.get_pretrained_cfg(model_name, tag)
    if not cfg:
        raise EmbedderUnavailable(f"open_clip has no pretrained tag {tag!r} for {model_name}")
    hub = cfg.get("hf_hub", "")
    if hub:
        repo, filename = os.path.split(hub)
        names = [
            n
            for n in (
                filename.replace(".bin", ".safetensors") if filename else "open_clip_model.safetensors",
                filename or "open_clip_pytorch_model.bin",
            )
            if n
        ]
        if any(isinstance(try_to_load_from_cache(repo, name), str) for name in names):
            return
        probe = f"{constants.ENDPOINT}/api/models/{repo}"
    else:
        probe = cfg.get("url", "")
    if constants.HF_HUB_OFFLINE:
        raise EmbedderUnavailable(f"weights for {model_name}/{tag} are not cached and HF_HUB_OFFLINE is set")
    try:
        httpx.head(probe, timeout=5.0, follow_redirects=True)
    except httpx.HTTPError as exc:
        raise EmbedderUnavailable(
            f"weights for {model_name}/{tag} are not cached and the model hub is unreachable "
            f"({exc.__class__.__name__}); "
            "set SHOPLENS_OPENCLIP_PRETRAINED to a local checkpoint"
        ) from None


@functools.lru_cache(maxsize=4)
def _load(model_name: str, pretrained: str | None, device: str) -> tuple[Any, Any, Any]:
    if needs_transformers(model_name) and importlib.util.find_spec("transformers") is None:
        raise EmbedderUnavailable(
            f"open_clip {model_name} has a Hugging Face text tower: install transformers "
            "(pip install 'shoplens[multilingual]')"
        )
    open_clip = import_open_clip()
    precision = "fp16" if device.startswith("cuda") else "fp32"
    if pretrained and not model_name.startswith(("local-dir:", "hf-hub:")):
        candidate = Path(pretrained).expanduser()
        if candidate.suffix in CHECKPOINT_SUFFIXES and not candidate.is_file():
            raise EmbedderUnavailable(f"open_clip checkpoint not found: {candidate}")
        if candidate.is_file():
            pretrained = str(candidate)
        else:
            ensure_weights_reachable(model_name, pretrained)
    try:
        model, _, preprocess = open_clip.create_model_and_transforms(
            model_name,
            pretrained=None if model_name.startswith(("local-dir:", "hf-hub:")) else pretrained,
            device=device,
            precision=precision,
        )
        tokenizer = open_clip.get_tokenizer(model_name)
    except (RuntimeError, FileNotFoundError, ValueError, OSError) as exc:
        raise EmbedderUnavailable(f"cannot load open_clip {model_name} ({pretrained}): {exc}") from exc
    model.eval()
    return model, preprocess, tokenizer


class OpenClipEmbedder(Embedder):
    def __init__(self, model_name: str, pretrained: str | None, device: str = "auto", batch_size: int = 32):
        try:
            import torch
        except ImportError:
            raise EmbedderUnavailable(
                "torch is not installed here: install shoplens[clip] (or run scripts/install.sh)"
            ) from None

        self.device = resolve_device(device)
        self._model, self._preprocess, self._tokenizer = _load(model_name, pretrained, self.device)
        self._dtype = next(self._model.parameters()).dtype
        self._torch = torch
        self._lock = threading.Lock()  # one forward pass at a time: torch already uses every core
        self.image_batch_size = batch_size
        self.text_batch_size = max(batch_size, 64)
        with torch.inference_mode():
            dim = int(self._model.encode_text(self._tokenizer(["probe"]).to(self.device)).shape[-1])
        self.identity = EmbedderIdentity(
            backend="openclip", model=_weights_id(model_name, pretrained), image_dim=dim, text_dim=dim, cross_modal=True
        )

    @classmethod
    def identity_for(cls, settings: Settings) -> EmbedderIdentity | None:
        """The identity from the config JSON and the weights' fingerprint, without torch.

        `model` is `_weights_id`, exactly as the built embedder computes it; the dimension is the
        config's `embed_dim` (what `encode_text` returns). None when the config cannot be read
        here or the build would fail on a missing checkpoint file.
        """
        model_name, pretrained = model_and_weights(settings)
        if model_name.startswith("local-dir:"):
            if not Path(model_name.removeprefix("local-dir:")).expanduser().is_dir():
                return None
        elif not model_name.startswith("hf-hub:") and pretrained:
            candidate = Path(pretrained).expanduser()
            if candidate.suffix in CHECKPOINT_SUFFIXES and not candidate.is_file():
                return None
        dim = config_embed_dim(model_name)
        if dim is None:
            return None
        return EmbedderIdentity(
            backend="openclip", model=_weights_id(model_name, pretrained), image_dim=dim, text_dim=dim, cross_modal=True
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> OpenClipEmbedder:
        if settings.torch_threads:
            import torch

            torch.set_num_threads(settings.torch_threads)
        model_name, pretrained = model_and_weights(settings)
        return cls(model_name, pretrained, settings.device, settings.embed_batch_size)

    def prepare_image(self, image: Image.Image) -> Any:
        """The model's own transform (resize, crop, normalise) to a CHW tensor."""
        return self._preprocess(image)

    def _embed_prepared(self, batch: Sequence[Any]) -> np.ndarray:
        pixels = self._torch.stack(list(batch))
        with self._lock, self._torch.inference_mode():
            features = self._model.encode_image(pixels.to(self.device, dtype=self._dtype))
        return features.float().cpu().numpy()

    def _embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        tokens = self._tokenizer(list(texts)).to(self.device)
        with self._lock, self._torch.inference_mode():
            features = self._model.encode_text(tokens)
        return features.float().cpu().numpy()
