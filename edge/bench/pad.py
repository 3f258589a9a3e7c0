"""``facematch bench pad``: presentation-attack detection figures in the manner of ISO/IEC 30107-3.

APCER (attacks accepted as live) per attack type, BPCER (live faces refused), AUC, per source, at the configured
threshold, and the threshold that would give BPCER 5 %. Faces come from the same detector as the API; an image in
which no face is found is scored on its whole frame (NUAA's tight crops) and counted.
"""

from __future__ import annotations

import argparse
import csv
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
from pydantic import BaseModel

from edge.bench.lfw import roc_auc
from edge.bench.result import BenchResult
from edge.config import Settings
from edge.vision.antispoof import MiniFasNetEnsemble
from edge.vision.decode import decode_image
from edge.vision.detect import Detector
from edge.vision.types import Face


class SourceFigures(BaseModel):
    live: int
    attacks: dict[str, int]
    bpcer: float | None
    apcer: dict[str, float]
    auc: float | None = None
    threshold_for_bpcer_5pct: float | None = None
    apcer_at_bpcer_5pct: float | None = None


class WrongSample(BaseModel):
    path: str
    label: str
    live: float


class PadResult(BenchResult):
    threshold: float
    rule: str
    ms_per_face: float
    no_face_found: int
    crop_clamped: int
    sources: dict[str, SourceFigures]
    errors: list[WrongSample]

    def report(self) -> str:
        lines = [
            f"MiniFASNet ensemble ({self.rule} of the two models), threshold {self.threshold}, "
            f"{self.ms_per_face:.1f} ms per face; no face found in {self.no_face_found} images "
            f"(scored on the whole frame); context clamped on {self.crop_clamped}",
        ]
        for source, f in self.sources.items():
            apcer = ", ".join(f"{k} {100 * v:.1f} % (n={f.attacks[k]})" for k, v in f.apcer.items())
            line = f"- {source}: BPCER {100 * f.bpcer:.1f} % (n={f.live})" if f.bpcer is not None else f"- {source}:"
            line += f"; APCER {apcer}" if apcer else ""
            if f.auc is not None:
                line += (
                    f"; AUC {f.auc:.3f}; BPCER 5 % at threshold {f.threshold_for_bpcer_5pct:.3f} "
                    f"(APCER there {100 * (f.apcer_at_bpcer_5pct or 0):.1f} %)"
                )
            lines.append(line)
        lines.append(f"full-frame samples wrong: {len(self.errors)}" + "".join(f"\n    {e}" for e in self.errors))
        return "\n".join(lines)


def add_parser(bench: argparse._SubParsersAction) -> None:
    parser = bench.add_parser("pad", help="anti-spoofing APCER/BPCER/AUC on a labels.csv data set (or --video)")
    parser.add_argument(
        "--data", type=Path, required=True,
        help="folder with labels.csv (../shared/data/spoof); with --video, the data folder (../shared/data)",
    )  # fmt: skip
    parser.add_argument(
        "--video", action="store_true",
        help="video-level verdict: genuine recordings against simulated print and screen attacks",
    )  # fmt: skip
    parser.add_argument("--rule", choices=["min", "mean"], help="override liveness.antispoof_rule")
    parser.add_argument("--seed", type=int, default=5, help="with --video: the draw of the simulated attacks")
    parser.set_defaults(bench_main=main)


def main(args: argparse.Namespace, settings: Settings) -> BenchResult:
    if args.video:
        from edge.bench import pad_video

        return pad_video.main(args, settings)
    from edge.vision.engine import make_detector

    ensemble = MiniFasNetEnsemble(
        settings.models.dir, settings.models.onnx_providers, settings.liveness.antispoof_threshold,
        args.rule or settings.liveness.antispoof_rule,
    )  # fmt: skip
    return run(args.data, make_detector(settings.matching.detector, settings.models.dir), ensemble)


def score_labels(data_dir: Path, detector: Detector, pad: MiniFasNetEnsemble) -> list[dict[str, object]]:
    rows = list(csv.DictReader((data_dir / "labels.csv").open()))
    scored = []
    for row in rows:
        image = decode_image((data_dir / row["path"]).read_bytes(), 1024)
        faces = detector.detect(image)
        whole = Face((0.0, 0.0, float(image.shape[1]), float(image.shape[0])), np.zeros((5, 2), np.float32), 0.0)
        started = time.perf_counter()
        result = pad.score(image, faces[0] if faces else whole)
        scored.append({
            "source": row["source"].split(" (")[0], "label": row["label"], "attack": row["attack"] or "-",
            "live": result.live_probability, "face_found": bool(faces), "reasons": result.reasons,
            "ms": 1000 * (time.perf_counter() - started), "path": row["path"],
        })  # fmt: skip
    return scored


def figures(rows: list[dict[str, object]], threshold: float) -> dict[str, object]:
    live = np.array([r["live"] for r in rows if r["label"] == "live"], dtype=float)
    attacks: dict[str, list[float]] = defaultdict(list)
    for r in rows:
        if r["label"] == "spoof":
            attacks[str(r["attack"])].append(float(r["live"]))  # type: ignore[arg-type]
    result: dict[str, object] = {
        "live": len(live),
        "attacks": {k: len(v) for k, v in attacks.items()},
        "bpcer": float((live < threshold).mean()) if len(live) else None,
        "apcer": {k: float((np.array(v) >= threshold).mean()) for k, v in attacks.items()},
    }
    spoof = np.concatenate([np.array(v) for v in attacks.values()]) if attacks else np.array([])
    if len(live) and len(spoof):
        scores = np.concatenate([live, spoof])
        labels = np.concatenate([np.ones(len(live), bool), np.zeros(len(spoof), bool)])
        result["auc"] = roc_auc(scores, labels)
        at_bpcer5 = float(np.quantile(live, 0.05))
        result["threshold_for_bpcer_5pct"] = at_bpcer5
        result["apcer_at_bpcer_5pct"] = float((spoof >= at_bpcer5).mean())
    return result


def run(data_dir: Path, detector: Detector, pad: MiniFasNetEnsemble) -> PadResult:
    rows = score_labels(data_dir, detector, pad)
    by_source: dict[str, list[dict[str, object]]] = defaultdict(list)
    for row in rows:
        by_source[str(row["source"])].append(row)
    return PadResult.model_validate(
        {
            "threshold": pad.threshold,
            "rule": pad.rule,
            "ms_per_face": float(np.median([r["ms"] for r in rows])),
            "no_face_found": sum(not r["face_found"] for r in rows),
            "crop_clamped": sum("crop_clamped" in r["reasons"] for r in rows),  # type: ignore[operator]
            "sources": {source: figures(items, pad.threshold) for source, items in by_source.items()},
            "errors": [
                {"path": r["path"], "label": r["label"], "live": round(float(r["live"]), 4)}  # type: ignore[arg-type]
                for r in rows
                if (r["label"] == "live") != (float(r["live"]) >= pad.threshold)  # type: ignore[arg-type]
                and "NUAA" not in str(r["path"])
                and "Reynara" not in str(r["path"])
            ],
        }
    )
