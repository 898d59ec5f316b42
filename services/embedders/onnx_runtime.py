"""The offline embedder's photo network run by ONNX Runtime on the CPU.

Why not torch's eager mode, which trained it: eager torch re-enters Python between every two of
the network's ~100 operations, each time waiting for the GIL, which an ingest's download, decode
and SQL threads hold in turn; ONNX Runtime runs the whole forward with the GIL released. It also
keeps its buffers between batches, where glibc handed eager torch's feature maps back to the system
after every batch and paid the page faults again. Measured (bench/photo_runtime.py, batch 32, 2
threads): 0.20 s a batch against eager torch's 0.39 s with glibc's defaults, what users run, and
0.24 s with the malloc tuning the benchmarks run with; beside two busy Python threads ONNX Runtime
took 1.30x its time alone, eager torch 1.40x.

The graph is exported from the torch module (its BatchNorms folded) by torch's own ONNX exporter
once per machine, then kept in the model cache under a name made of the weights' SHA-256 and the
exporter's versions, so a new checkpoint, torch or opset is exported afresh. Written atomically:
processes that start together may both export, and one file wins.
"""

from __future__ import annotations

import logging
import threading
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from services.embedders.streams import Streams, stream_count
from services.files import write_atomic
from services.images import sha256_hex

log = logging.getLogger(__name__)

OPSET = 18
INPUT, OUTPUT = "pixels", "features"
_export_lock = threading.Lock()


def graph_path(cache_dir: Path, name: str, weights: Path) -> Path:
    import torch

    version = torch.__version__.split("+")[0]
    return cache_dir / f"{name}-{sha256_hex(weights.read_bytes())[:16]}-torch{version}-opset{OPSET}.onnx"


def export(module: Any, sample: Any) -> bytes:
    """`module` (eval mode) as a serialized ONNX graph that takes any batch size."""
    import torch

    batch = torch.export.Dim("batch", min=1, max=4096)
    with warnings.catch_warnings():  # torch's exporter warns about its own internals
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        program = _exported(torch, module, sample, batch)
    if program is None:  # only the old exporter, asked to write a file itself, returns None
        raise RuntimeError("torch's ONNX exporter returned no program")
    return bytes(program.model_proto.SerializeToString())


def _exported(torch: Any, module: Any, sample: Any, batch: Any) -> Any:
    return torch.onnx.export(
        module,
        (sample,),
        dynamo=True,
        input_names=[INPUT],
        output_names=[OUTPUT],
        dynamic_shapes=({0: batch},),
        opset_version=OPSET,
        verbose=False,
    )


class OnnxFeatures:
    """A network's ONNX graph in ONNX Runtime: float32 NCHW batch in, its output out. A small batch
    runs in a session on `threads` threads; a large one in single-threaded streams, one per core,
    sharing a second session (streams.py says why). Session.run releases the GIL for the whole
    forward and may be called from several threads at once."""

    def __init__(self, graph: Path | bytes, threads: int = 0):
        self.graph = graph if isinstance(graph, Path) else None  # None: this process's own copy
        source = str(graph) if isinstance(graph, Path) else graph
        self.session = _session(source, threads)  # 0: ONNX Runtime's choice, one per physical core
        self.streams = Streams(stream_count(threads), "onnx-stream")
        self._single = _session(source, 1) if self.streams.count > 1 else self.session  # 30 ms more to load

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        if not self.streams.wanted(len(batch)):
            return _run(self.session, batch)
        return self.streams.map(lambda part: _run(self._single, part), batch)


def _session(source: str | bytes, threads: int) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # errors only: its warnings are about graph rewrites
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])


def _run(session: Any, batch: np.ndarray) -> np.ndarray:
    return session.run([OUTPUT], {INPUT: batch})[0]


def served(module: Any, sample: Any, cache_dir: Path, name: str, weights: Path, threads: int = 0) -> OnnxFeatures:
    """The cached graph of `module` in a session, exported first when the cache lacks it or
    holds a file ONNX Runtime cannot load (a copy cut short, a disk error). A cache that cannot
    be written (a read-only volume) costs an export in each process, not the photo half."""
    target = graph_path(cache_dir, name, weights)
    with _export_lock:
        if target.is_file():
            try:
                return OnnxFeatures(target, threads)
            except Exception as exc:  # onnxruntime raises its own exception types for a bad file
                log.warning("the cached %s graph %s cannot be loaded (%s); exporting it again", name, target, exc)
                target.unlink(missing_ok=True)
        log.info("exporting %s to ONNX once for this machine (cached in %s)", name, cache_dir)
        graph = export(module, sample)
        try:
            write_atomic(target, graph, 0o644)  # readable by the machine's other users, as any cache entry
        except OSError as exc:
            log.warning("cannot keep the %s graph in %s (%s); this process keeps its own copy", name, cache_dir, exc)
            return OnnxFeatures(graph, threads)
        return OnnxFeatures(target, threads)
