"""``facematch bench idle``: what the appliance costs at rest, with nobody at the door.

``facematch up`` runs on free ports with a video of an empty room as the camera (the last seconds of the quick video of
``bench live``, looped) and the display under SDL's offscreen driver; after it has settled, each process's CPU time
(Linux /proc) is read over a fixed span. Run twice in the same call: as configured (``door.idle_fps``), and as the
reference with the door flow looking at every frame (``door.idle_fps: 0``).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from pydantic import BaseModel

from edge.bench.live import QUICK_VIDEO, empty_room_video
from edge.bench.match import processes_of, running_stack
from edge.bench.result import BenchError, BenchResult
from edge.config import Settings

SETTLE_SECONDS = 10.0  # models loaded, the camera open, the first idle frames behind


class IdleRun(BaseModel):
    idle_fps: float
    cores: dict[str, float]  # process -> CPU seconds per second over the span

    @property
    def total(self) -> float:
        return sum(self.cores.values())

    def line(self) -> str:
        parts = ", ".join(f"{name} {share:.3f}" for name, share in sorted(self.cores.items()))
        return f"door.idle_fps {self.idle_fps:g}: {self.total:.3f} cores in all ({parts})"


class IdleBenchResult(BenchResult):
    seconds: float
    configured: IdleRun
    reference: IdleRun

    def report(self) -> str:
        ratio = self.configured.total / self.reference.total if self.reference.total else 0.0
        return "\n".join([
            f"facematch up at rest (an empty room as the camera, display offscreen), CPU over {self.seconds:g} s:",
            f"  as configured, {self.configured.line()}",
            f"  reference, every frame looked at, {self.reference.line()}",
            f"  ratio {ratio:.2f}",
        ])  # fmt: skip


def add_parser(bench: argparse._SubParsersAction) -> None:
    parser = bench.add_parser("idle", help="CPU of every process of facematch up with nobody at the door")
    parser.add_argument("--data-dir", type=Path, default=Path("../shared/data"), help="the shared data folder")
    parser.add_argument("--seconds", type=float, default=20.0, help="how long CPU time is read for")
    parser.set_defaults(bench_main=main)


def main(args: argparse.Namespace, settings: Settings) -> IdleBenchResult:
    video = args.data_dir / QUICK_VIDEO
    if not video.is_file():
        raise BenchError(f"no video at {video}: pass --data-dir pointing at ../shared/data")
    if args.seconds <= 0:
        raise BenchError("--seconds must be above 0")
    with tempfile.TemporaryDirectory(prefix="facematch-idle-") as tmp:
        room = empty_room_video(video, Path(tmp) / "empty-room.avi")
        configured = _measure(Path(tmp) / "configured", room, settings.door.idle_fps, args.seconds)
        reference = _measure(Path(tmp) / "reference", room, 0.0, args.seconds)
    return IdleBenchResult(seconds=args.seconds, configured=configured, reference=reference)


def _measure(state: Path, room: Path, idle_fps: float, seconds: float) -> IdleRun:
    env = {
        "FACEMATCH_CAMERA__SOURCE": "file",
        "FACEMATCH_CAMERA__DEVICE": str(room),
        "FACEMATCH_DOOR__IDLE_FPS": str(idle_fps),
        "FACEMATCH_DISPLAY__ENABLED": "true",
        "FACEMATCH_DISPLAY__FULLSCREEN": "false",
        "SDL_VIDEODRIVER": "offscreen",
    }
    with running_stack(state, extra_env=env) as (_url, _key, pid):
        time.sleep(SETTLE_SECONDS)
        before, began = cpu_seconds(pid), time.monotonic()
        time.sleep(seconds)
        after, elapsed = cpu_seconds(pid), time.monotonic() - began
    cores = {name: (after[name] - before.get(name, 0.0)) / elapsed for name in after}
    return IdleRun(idle_fps=idle_fps, cores=cores)


def cpu_seconds(parent: int) -> dict[str, float]:
    """User + system CPU seconds of ``facematch up`` and each process it started, by name (Linux /proc)."""
    tick = os.sysconf("SC_CLK_TCK")
    seconds: dict[str, float] = {}
    for name, entry in processes_of(parent):
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # utime and stime are the 14th and 15th fields of stat; fields[] starts at the 3rd
        seconds[name] = seconds.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / tick
    return seconds
