"""``facematch bench load``: N concurrent clients on ``/match`` (and, with ``--video``, the liveness pair) for a while,
against ``facematch up`` on free ports (or ``--url``): throughput, latency percentiles, answers by code, and the
resident memory of each process at the start and the end. Overload must show as 429/503 answered at once, not as
latency that grows without bound."""

from __future__ import annotations

import argparse
import base64
import statistics
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
from pydantic import BaseModel, Field

from edge.bench.liveness import make_webm
from edge.bench.match import percentile, photo_640x480, resident_mb, running_stack
from edge.bench.result import BenchResult
from edge.config import Settings

SAMPLE_EVERY = 30.0


class EndpointLoad(BaseModel):
    requests: int
    per_second: float
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    answers: dict[str, int]  # "200", or the error code ("503 overloaded", "429 rate_limited", …)
    refused_p95_ms: float | None  # how fast the refusals came


class LoadResult(BenchResult):
    clients: int
    seconds: float
    endpoints: dict[str, EndpointLoad]
    resident_mb_start: dict[str, float] | None = None
    resident_mb_end: dict[str, float] | None = None
    # (seconds since the start, MB per process) every SAMPLE_EVERY seconds: growth after warm-up would be a leak
    resident_mb_samples: list[tuple[float, dict[str, float]]] = Field(default_factory=list)

    def report(self) -> str:
        lines = [f"{self.clients} clients for {self.seconds:.0f} s"]
        for name, e in self.endpoints.items():
            timing = (
                "no success"
                if e.p50_ms is None
                else f"p50 {e.p50_ms:.0f} ms, p95 {e.p95_ms:.0f} ms, p99 {e.p99_ms:.0f} ms"
            )
            lines.append(f"{name}: {e.requests} requests, {e.per_second:.1f}/s answered 200; {timing}")
            lines.append("  answers: " + ", ".join(f"{code} ×{n}" for code, n in sorted(e.answers.items())))
            if e.refused_p95_ms is not None:
                lines.append(f"  refusals answered within {e.refused_p95_ms:.0f} ms (p95)")
        if self.resident_mb_start and self.resident_mb_end:
            start, end = self.resident_mb_start, self.resident_mb_end
            memory = ", ".join(f"{n} {start.get(n, 0):.0f} → {mb:.0f} MB" for n, mb in sorted(end.items()))
            lines.append(f"resident memory: {memory}")
        if len(self.resident_mb_samples) >= 3:
            (t1, first), (t2, last) = self.resident_mb_samples[1], self.resident_mb_samples[-1]
            trend = ", ".join(f"{n} {first.get(n, 0):.0f} → {mb:.0f} MB" for n, mb in sorted(last.items()))
            lines.append(f"  from {t1:.0f} s (warm) to {t2:.0f} s: {trend}")
        return "\n".join(lines)


class _Tally:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.ok: list[float] = []
        self.refused: list[float] = []
        self.answers: Counter[str] = Counter()

    def add(self, response: httpx.Response | None, seconds: float) -> None:
        with self.lock:
            if response is None:
                self.answers["connection error"] += 1
                return
            if response.status_code == 200:
                self.ok.append(seconds)
                self.answers["200"] += 1
                return
            try:
                code = response.json()["error"]["code"]
            except (ValueError, KeyError, TypeError):
                code = "not JSON"
            self.answers[f"{response.status_code} {code}"] += 1
            self.refused.append(seconds)

    def figures(self, seconds: float) -> EndpointLoad:
        def ms(values: list[float], q: float) -> float | None:
            return 1000 * percentile(values, q) if values else None

        return EndpointLoad(
            requests=sum(self.answers.values()), per_second=len(self.ok) / seconds,
            p50_ms=1000 * statistics.median(self.ok) if self.ok else None, p95_ms=ms(self.ok, 95),
            p99_ms=ms(self.ok, 99), answers=dict(self.answers), refused_p95_ms=ms(self.refused, 95),
        )  # fmt: skip


def _timed(client: httpx.Client, method: str, url: str, **kwargs) -> tuple[httpx.Response | None, float]:
    started = time.perf_counter()
    try:
        response = client.request(method, url, **kwargs)
    except httpx.HTTPError:
        response = None
    return response, time.perf_counter() - started


def _honour_retry_after(response: httpx.Response | None) -> None:
    """A well-behaved client waits as long as a 429/503 asks before trying again."""
    if response is not None and response.status_code in (429, 503):
        try:
            time.sleep(min(10.0, float(response.headers.get("Retry-After", "1"))))
        except ValueError:
            time.sleep(1.0)


def hammer(url: str, key: str, clients: int, seconds: float, photos: tuple[bytes, bytes], video: bytes | None):
    match_body = {"image1": base64.b64encode(photos[0]).decode(), "image2": base64.b64encode(photos[1]).decode()}
    tallies = {"/match": _Tally(), "/submit-liveness": _Tally()}
    deadline = time.monotonic() + seconds

    def match_client() -> None:
        with httpx.Client(headers={"X-API-Key": key}, timeout=60) as client:
            while time.monotonic() < deadline:
                answer = _timed(client, "POST", f"{url}/match", json=match_body)
                tallies["/match"].add(*answer)
                _honour_retry_after(answer[0])

    def liveness_client() -> None:
        with httpx.Client(headers={"X-API-Key": key}, timeout=120) as client:
            while time.monotonic() < deadline:
                session = client.post(f"{url}/initiate-liveness", json={})
                if session.status_code != 200:
                    tallies["/submit-liveness"].add(session, 0.0)
                    time.sleep(1)
                    continue
                body = session.json()
                time.sleep(body["total_duration"])  # as long as showing and recording the challenge takes
                files = {"video": ("challenge.webm", video, "video/webm")}
                form = {"session_id": body["session_id"]}
                answer = _timed(client, "POST", f"{url}/submit-liveness", data=form, files=files)
                tallies["/submit-liveness"].add(*answer)
                _honour_retry_after(answer[0])

    workers = [match_client] * clients + ([liveness_client] * clients if video else [])
    threads = [threading.Thread(target=w, daemon=True) for w in workers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return {name: t.figures(seconds) for name, t in tallies.items() if t.answers}


def run(photos: tuple[Path, Path], video: Path | None, clients: int, seconds: float, url: str | None,
        api_key: str | None) -> LoadResult:  # fmt: skip
    images = (photo_640x480(photos[0]), photo_640x480(photos[1]))
    with tempfile.TemporaryDirectory(prefix="facematch-load-") as tmp:
        clip = make_webm(video, Path(tmp) / "challenge.webm").read_bytes() if video else None
        if url is not None:
            endpoints = hammer(url, api_key or "", clients, seconds, images, clip)
            return LoadResult(clients=clients, seconds=seconds, endpoints=endpoints)
        # The rate limits would turn a load test into a test of the rate limits: lifted for the stack it starts.
        unlimited = {"FACEMATCH_API__RATE_LIMIT_PER_KEY": "1000000/minute",
                     "FACEMATCH_API__RATE_LIMIT_PER_ADDRESS": "1000000/minute"}  # fmt: skip
        with running_stack(Path(tmp) / "state", extra_env=unlimited) as (stack_url, key, pid):
            start = resident_mb(pid)
            samples: list[tuple[float, dict[str, float]]] = []
            stop = threading.Event()
            began = time.monotonic()

            def sample() -> None:
                while not stop.wait(SAMPLE_EVERY):
                    samples.append((round(time.monotonic() - began, 1), resident_mb(pid)))

            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            endpoints = hammer(stack_url, key, clients, seconds, images, clip)
            stop.set()
            sampler.join()
            end = resident_mb(pid)
    return LoadResult(clients=clients, seconds=seconds, endpoints=endpoints, resident_mb_start=start,
                      resident_mb_end=end, resident_mb_samples=samples)  # fmt: skip


def add_parser(bench: argparse._SubParsersAction) -> None:
    parser = bench.add_parser(
        "load", help="N concurrent clients on /match (and liveness) for a while: throughput, errors"
    )
    parser.add_argument("photo1", type=Path)
    parser.add_argument("photo2", type=Path)
    parser.add_argument(
        "--video", type=Path, help="a face recording: also run liveness clients (initiate, wait, submit)"
    )
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients per endpoint")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--url", help="a running hub (default: start `facematch up` on free ports)")
    parser.add_argument("--api-key", help="X-API-Key for --url")
    parser.set_defaults(bench_main=main)


def main(args: argparse.Namespace, settings: Settings) -> LoadResult:
    return run((args.photo1, args.photo2), args.video, args.clients, args.seconds, args.url, args.api_key)
