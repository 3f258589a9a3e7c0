"""Model manifest and fetcher: every weight file pinned by sha256, with its licence and its sources in order."""

from models.manifest import ModelMissing, ModelSpec, load_manifest, model_path

__all__ = ["ModelMissing", "ModelSpec", "load_manifest", "model_path"]
