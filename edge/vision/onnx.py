"""ONNX Runtime sessions with the configured providers, and a clear word when a provider silently fell back."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import onnxruntime as ort

log = logging.getLogger(__name__)

# A provider as ONNX Runtime takes it: its name, or its name with its options.
Provider = str | tuple[str, dict[str, Any]]

TENSORRT = "TensorrtExecutionProvider"


def configured_providers(names: list[str], tensorrt_cache: Path | None) -> list[Provider]:
    """The configured providers, TensorRT with an engine cache: building its engines takes minutes on a Jetson, so
    they are built once into the state directory instead of at every start."""
    if tensorrt_cache is None:
        return list(names)
    options = {"trt_engine_cache_enable": True, "trt_engine_cache_path": str(tensorrt_cache), "trt_fp16_enable": True}
    return [(name, options) if name == TENSORRT else name for name in names]


def _name(provider: Provider) -> str:
    return provider if isinstance(provider, str) else provider[0]


def create_session(model: Path, providers: list[Provider], threads: int = 1) -> ort.InferenceSession:
    options = ort.SessionOptions()
    # One thread per session: the daemon runs several requests side by side on the 2 cores instead.
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # the SFace file carries unused initialisers that ORT warns about at load
    available = ort.get_available_providers()
    chosen = [p for p in providers if _name(p) in available] or ["CPUExecutionProvider"]
    for provider in chosen:
        if not isinstance(provider, str) and provider[0] == TENSORRT:
            Path(provider[1]["trt_engine_cache_path"]).mkdir(parents=True, exist_ok=True)
    session = ort.InferenceSession(str(model), options, providers=chosen)
    active = session.get_providers()
    if active[0] != _name(providers[0]):
        log.warning("%s: asked for %s, running on %s", model.name, _name(providers[0]), active[0])
    return session


def running_on(session: ort.InferenceSession) -> str:
    """The provider a session really runs on (its first: ONNX Runtime falls back silently)."""
    return str(session.get_providers()[0])
