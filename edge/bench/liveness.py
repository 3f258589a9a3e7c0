"""``facematch bench liveness``: /submit-liveness end to end on a 9 s 640×480 30 fps WebM (VP8), as a browser sends.

The video is cut from a real recording with ffmpeg. Each run opens a session and submits; the figures are the
server's own ``processing_time`` (upload spooled, video decoded, tracked, anti-spoofing sampled, scored) and the
wall time seen by the client.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import httpx

from edge.bench.match import memory_line, percentile, resident_mb, running_stack
from edge.bench.result import BenchResult
from edge.config import Settings


class LivenessBenchResult(BenchResult):
    source: str
    runs: int
    resident_mb: dict[str, float] | None = None
    server_p50_s: float
    server_p95_s: float
    client_p50_s: float
    tracked_frames_per_second: float
    video_bytes: int

    def report(self) -> str:
        lines = [
            f"/submit-liveness, 9 s 640x480 30 fps VP8 WebM ({self.video_bytes} bytes), {self.runs} runs",
            f"server processing time p50 {self.server_p50_s:.3f} s, p95 {self.server_p95_s:.3f} s "
            f"(seed: 2.45 s); client wall time p50 {self.client_p50_s:.3f} s",
            f"landmark tracking: {self.tracked_frames_per_second:.0f} frames/s (every 0.1 s of video is tracked)",
        ]
        if self.resident_mb:
            lines.append(memory_line(self.resident_mb))
        return "\n".join(lines)


def add_parser(bench: argparse._SubParsersAction) -> None:
    parser = bench.add_parser("liveness", help="/submit-liveness processing time for a 9 s 640x480 WebM")
    parser.add_argument("video", type=Path, help="a face recording to cut the 9 s challenge video from")
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--url", help="a running hub (default: start `facematch up` on free ports)")
    parser.add_argument("--api-key", help="X-API-Key for --url")
    parser.set_defaults(bench_main=main)


def main(args: argparse.Namespace, settings: Settings) -> LivenessBenchResult:
    return run(args.video, args.runs, args.url, args.api_key)


def make_webm(source: Path, target: Path, seconds: float = 9.0) -> Path:
    subprocess.run(
        ["ffmpeg", "-v", "error", "-y", "-i", str(source), "-t", str(seconds), "-an", "-vf",
         "scale=640:480,fps=30", "-c:v", "libvpx", "-b:v", "1.5M", str(target)],
        check=True,
    )  # fmt: skip
    return target


def time_submissions(url: str, api_key: str, video: bytes, runs: int) -> dict[str, list[float]]:
    server, wall, fps = [], [], []
    with httpx.Client(timeout=120, headers={"X-API-Key": api_key}) as client:
        for i in range(runs + 1):
            session = client.post(f"{url}/initiate-liveness", json={}).json()
            time.sleep(session["total_duration"])  # as long as showing and recording it takes (else 425)
            files = {"video": ("challenge.webm", video, "video/webm")}
            response = client.post(f"{url}/submit-liveness", data={"session_id": session["session_id"]}, files=files)
            response.raise_for_status()
            body = response.json()
            if i == 0:
                continue  # warm-up
            server.append(body["processing_time"])
            wall.append(response.elapsed.total_seconds())
            fps.append(body["frames_processed"] / body["tracking_time"])
    return {"server": server, "wall": wall, "fps": fps}


def run(source: Path, runs: int, url: str | None, api_key: str | None) -> LivenessBenchResult:
    result: dict[str, object] = {"source": str(source), "runs": runs}
    with tempfile.TemporaryDirectory(prefix="facematch-bench-") as tmp:
        video = make_webm(source, Path(tmp) / "challenge.webm").read_bytes()
        if url is not None:
            timings = time_submissions(url, api_key or "", video, runs)
        else:
            with running_stack(Path(tmp) / "state") as (stack_url, stack_key, pid):
                timings = time_submissions(stack_url, stack_key, video, runs)
                result["resident_mb"] = resident_mb(pid)
    result.update(
        server_p50_s=statistics.median(timings["server"]),
        server_p95_s=percentile(timings["server"], 95),
        client_p50_s=statistics.median(timings["wall"]),
        tracked_frames_per_second=statistics.median(timings["fps"]),
        video_bytes=len(video),
    )
    return LivenessBenchResult.model_validate(result)
