"""Embedding model ids, without loading any model (the hub names the workers' model from its config)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from edge.config import Settings

MODEL_IDS = {"sface": "sface-2021dec", "facenet": "facenet-msceleb", "dlib": "dlib-resnet-v1"}
# The embedders the accurate profile fuses, each with its mirror image (their model ids: ACCURATE_PARTS).
ACCURATE_EMBEDDERS = ("sface", "facenet")


def model_id_for(embedder: str, flip: bool) -> str:
    """The id of an embedder's vectors (flip averaging makes other vectors: ``-flip``; dlib has no flip)."""
    return MODEL_IDS[embedder] + ("-flip" if flip and embedder != "dlib" else "")


ACCURATE_PARTS = tuple(model_id_for(name, flip=True) for name in ACCURATE_EMBEDDERS)


def configured_model_id(settings: Settings) -> str:
    """The id of the templates the configured profile makes (the fused one names its parts and weights)."""
    if settings.matching.profile == "accurate":
        from edge.vision.fusion import Fusion

        return Fusion.load().model_id
    return model_id_for(settings.matching.embedder, settings.matching.flip_embedding)
