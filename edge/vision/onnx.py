"""ONNX Runtime sessions with the configured providers, and a clear word when a provider silently fell back."""

from __future__ import annotations

import logging
from pathlib import Path

import onnxruntime as ort

log = logging.getLogger(__name__)


def create_session(model: Path, providers: list[str], threads: int = 1) -> ort.InferenceSession:
    options = ort.SessionOptions()
    # One thread per session: the daemon runs several requests side by side on the 2 cores instead.
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # the SFace file carries unused initialisers that ORT warns about at load
    available = ort.get_available_providers()
    chosen = [p for p in providers if p in available] or ["CPUExecutionProvider"]
    session = ort.InferenceSession(str(model), options, providers=chosen)
    active = session.get_providers()
    if active[0] != providers[0]:
        log.warning("%s: asked for %s, running on %s", model.name, providers[0], active[0])
    return session
