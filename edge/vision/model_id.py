"""Embedding model ids, without loading any model (the hub names the workers' model from its config)."""

from __future__ import annotations

MODEL_IDS = {"sface": "sface-2021dec", "facenet": "facenet-msceleb", "dlib": "dlib-resnet-v1"}


def model_id_for(embedder: str, flip: bool) -> str:
    """The id of an embedder's vectors (flip averaging makes other vectors: ``-flip``; dlib has no flip)."""
    return MODEL_IDS[embedder] + ("-flip" if flip and embedder != "dlib" else "")
