"""``facematch bench liveness``: a challenge video scored end to end through a running stack, as a browser sends it.

Each run opens a session, cuts a WebM (VP8, 640×480, 30 fps) of exactly the drawn challenge's length (7.2–10.8 s,
9 s on average) from a real recording with ffmpeg, and has it scored twice, on two sessions:

- **whole file** (`/submit-liveness`, the seed's way): after the challenge's length has passed, the video is uploaded;
  the figure is the server's own ``processing_time`` (upload spooled, decoded, tracked, anti-spoofing, scored);
- **streamed** (`/submit-liveness/stream/…`): the video, as long as the challenge (the page stops recording when the
  last window ends), is sent in 0.5 s chunks at the pace a recorder delivers them, then the end; the figure is the
  time from the end of the last window (when the last chunk is due) to the verdict: the last chunk's upload, the end
  request and the scoring left.
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

CHUNK_SECONDS = 0.5  # the page's MediaRecorder timeslice


class LivenessBenchResult(BenchResult):
    source: str
    runs: int
    resident_mb: dict[str, float] | None = None
    challenge_seconds_mean: float
    server_p50_s: float
    server_p95_s: float
    client_p50_s: float
    tracked_frames_per_second: float
    stream_p50_s: float
    stream_p95_s: float
    stream_max_s: float

    def report(self) -> str:
        lines = [
            f"challenge videos: VP8 WebM 640x480 30 fps, {self.runs} runs, "
            f"mean length {self.challenge_seconds_mean:.2f} s",
            f"whole file (/submit-liveness): server processing time p50 {self.server_p50_s:.3f} s, "
            f"p95 {self.server_p95_s:.3f} s (target p50 <= 0.6 s; seed: 2.45 s); client wall time p50 "
            f"{self.client_p50_s:.3f} s; landmark tracking {self.tracked_frames_per_second:.0f} frames/s",
            f"streamed (0.5 s chunks at recording pace): verdict after the last window p50 {self.stream_p50_s:.3f} s, "
            f"p95 {self.stream_p95_s:.3f} s, max {self.stream_max_s:.3f} s (target <= 0.3 s); "
            f"{self.server_p50_s / self.stream_p50_s:.1f}x sooner than the whole file's answer (p50, same run)",
        ]
        if self.resident_mb:
            lines.append(memory_line(self.resident_mb))
        return "\n".join(lines)


def add_parser(bench: argparse._SubParsersAction) -> None:
    parser = bench.add_parser("liveness", help="/submit-liveness, whole file and streamed, on real challenge videos")
    parser.add_argument("video", type=Path, help="a face recording (at least 11 s) to cut the challenge videos from")
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--url", help="a running hub (default: start `facematch up` on free ports)")
    parser.add_argument("--api-key", help="X-API-Key for --url")
    parser.set_defaults(bench_main=main)


def main(args: argparse.Namespace, settings: Settings) -> LivenessBenchResult:
    return run(args.video, args.runs, args.url, args.api_key)


def make_webm(source: Path, target: Path, seconds: float = 9.0) -> Path:
    subprocess.run(
        ["ffmpeg", "-v", "error", "-y", "-i", str(source), "-t", f"{seconds:.3f}", "-an", "-vf",
         "scale=640:480,fps=30", "-c:v", "libvpx", "-b:v", "1.5M", str(target)],
        check=True,
    )  # fmt: skip
    return target


def submit_whole(client: httpx.Client, url: str, session: dict, video: bytes) -> httpx.Response:
    files = {"video": ("challenge.webm", video, "video/webm")}
    response = client.post(f"{url}/submit-liveness", data={"session_id": session["session_id"]}, files=files)
    response.raise_for_status()
    return response


def submit_streamed(client: httpx.Client, url: str, session: dict, video: bytes, seconds: float) -> float:
    """Send ``video`` (``seconds`` long) as a recorder would, chunk k of n when (k+1)/n of it has been recorded, then
    the end; the seconds from the end of the recording (the last window's end) to the verdict."""
    pieces = max(1, round(seconds / CHUNK_SECONDS))
    stream = f"{url}/submit-liveness/stream/{session['session_id']}"
    started = time.perf_counter()
    for k in range(pieces):
        time.sleep(max(0.0, started + (k + 1) * seconds / pieces - time.perf_counter()))
        chunk = video[k * len(video) // pieces : (k + 1) * len(video) // pieces]
        client.post(stream, params={"index": k}, content=chunk).raise_for_status()
    response = client.post(f"{stream}/end")
    response.raise_for_status()
    return time.perf_counter() - (started + seconds)


def cut_for(session: dict, source: Path, folder: Path, tail: float = 0.0) -> tuple[bytes, float]:
    """A video of the session's challenge length (the page stops its recorder when the last window ends) + ``tail``."""
    seconds = session["total_duration"] + tail
    return make_webm(source, folder / f"{session['session_id']}.webm", seconds).read_bytes(), seconds


def time_submissions(url: str, api_key: str, source: Path, runs: int, folder: Path) -> dict[str, list[float]]:
    figures: dict[str, list[float]] = {"server": [], "wall": [], "fps": [], "stream": [], "seconds": []}
    with httpx.Client(timeout=120, headers={"X-API-Key": api_key}) as client:
        for i in range(runs + 1):
            whole = client.post(f"{url}/initiate-liveness", json={}).json()
            opened = time.monotonic()
            video, seconds = cut_for(whole, source, folder, tail=0.2)
            time.sleep(max(0.0, opened + seconds - time.monotonic()))  # showing it takes that long (else 425)
            answer = submit_whole(client, url, whole, video)
            streamed = client.post(f"{url}/initiate-liveness", json={}).json()
            video, seconds = cut_for(streamed, source, folder)
            after_the_end = submit_streamed(client, url, streamed, video, seconds)
            if i == 0:
                continue  # warm-up
            body = answer.json()
            figures["server"].append(body["processing_time"])
            figures["wall"].append(answer.elapsed.total_seconds())
            figures["fps"].append(body["frames_processed"] / body["tracking_time"])
            figures["seconds"].append(whole["total_duration"])
            figures["stream"].append(after_the_end)
    return figures


def run(source: Path, runs: int, url: str | None, api_key: str | None) -> LivenessBenchResult:
    result: dict[str, object] = {"source": str(source), "runs": runs}
    with tempfile.TemporaryDirectory(prefix="facematch-bench-") as tmp:
        if url is not None:
            figures = time_submissions(url, api_key or "", source, runs, Path(tmp))
        else:
            with running_stack(Path(tmp) / "state") as (stack_url, stack_key, pid):
                figures = time_submissions(stack_url, stack_key, source, runs, Path(tmp))
                result["resident_mb"] = resident_mb(pid)
    result.update(
        challenge_seconds_mean=statistics.mean(figures["seconds"]),
        server_p50_s=statistics.median(figures["server"]),
        server_p95_s=percentile(figures["server"], 95),
        client_p50_s=statistics.median(figures["wall"]),
        tracked_frames_per_second=statistics.median(figures["fps"]),
        stream_p50_s=statistics.median(figures["stream"]),
        stream_p95_s=percentile(figures["stream"], 95),
        stream_max_s=max(figures["stream"]),
    )
    return LivenessBenchResult.model_validate(result)
