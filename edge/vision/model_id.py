"""Embedding model ids, without loading any model (the hub names the workers' model from its config)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from edge.config import Settings

MODEL_IDS = {"sface": "sface-2021dec", "facenet": "facenet-msceleb", "mbf": "mbf-w600k", "dlib": "dlib-resnet-v1"}
DIMENSIONS = {"sface": 128, "facenet": 128, "mbf": 512, "dlib": 128}
# The embedders the accurate profile fuses by default (`matching.accurate_embedders`), each with its mirror image.
ACCURATE_EMBEDDERS = ("sface", "facenet", "mbf")


def model_id_for(embedder: str, flip: bool) -> str:
    """The id of an embedder's vectors (flip averaging makes other vectors: ``-flip``; dlib has no flip)."""
    return MODEL_IDS[embedder] + ("-flip" if flip and embedder != "dlib" else "")


def accurate_parts(embedders: tuple[str, ...] | list[str] = ACCURATE_EMBEDDERS) -> tuple[str, ...]:
    """The model ids of the accurate profile's parts (each embedded with its mirror image)."""
    return tuple(model_id_for(name, flip=True) for name in embedders)


def configured_model_id(settings: Settings) -> str:
    """The id of the templates the configured profile makes (the fused one names its parts and weights)."""
    if settings.matching.profile == "accurate":
        from edge.vision.fusion import Fusion

        return Fusion.load(accurate_parts(settings.matching.accurate_embedders)).model_id
    return model_id_for(settings.matching.embedder, settings.matching.flip_embedding)


def first_stage_dimension(settings: Settings) -> int:
    """The leading columns a large gallery is searched by first (``edge.identify.index``): the first part of the
    accurate profile's fused template; 0 for one model's templates, which are searched in one product."""
    if settings.matching.profile != "accurate":
        return 0
    return DIMENSIONS[settings.matching.accurate_embedders[0]]
