"""LFW: the standard 10-fold verification protocol, and the score calibration, through the API's own pipeline.

Images are read as bytes and go through ``decode_image`` and ``FaceEngine.analyze`` exactly as ``/match`` does.
An image whose face fails a quality check is still embedded (the protocol needs a score for every pair) and
counted; an image with no face found gives the pair a score of 0 (a non-match) and is counted.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydantic import BaseModel, Field

from edge.bench.result import BenchResult, side_by_side
from edge.config import Settings
from edge.progress import progress
from edge.vision.calibration import Calibration
from edge.vision.decode import decode_image
from edge.vision.engine import FaceEngine
from edge.vision.fusion import Fusion
from edge.vision.quality import BLOCKING, NO_FACE


@dataclass(frozen=True)
class Pair:
    a: str  # "Name/Name_0001.jpg"
    b: str
    same: bool
    fold: int


def image_name(name: str, number: str) -> str:
    return f"{name}/{name}_{int(number):04d}.jpg"


def read_pairs(path: Path) -> list[Pair]:
    """pairs.txt (``folds n`` header, per fold n same + n different) or pairsDev*.txt (``n`` header)."""
    lines = path.read_text().split("\n")
    header = lines[0].split()
    folds, per = (int(header[0]), int(header[1])) if len(header) == 2 else (1, int(header[0]))
    pairs = []
    rows = [line.split() for line in lines[1:] if line.strip()]
    for index, row in enumerate(rows):
        fold = index // (2 * per)
        if len(row) == 3:
            pairs.append(Pair(image_name(row[0], row[1]), image_name(row[0], row[2]), True, fold))
        elif len(row) == 4:
            pairs.append(Pair(image_name(row[0], row[1]), image_name(row[2], row[3]), False, fold))
    assert fold + 1 == folds or folds == 1
    return pairs


@dataclass
class EmbeddingTable:
    names: list[str]
    vectors: np.ndarray  # rows L2-normalised; zeros where no face was found
    no_face: list[str]
    poor_quality: dict[str, list[str]]
    seconds: float
    embed_ms: float = 0.0  # mean time to embed one detected face (the profile's cost per face)

    def index(self) -> dict[str, int]:
        return {name: i for i, name in enumerate(self.names)}


def embed_images(engine: FaceEngine, images_dir: Path, names: list[str], max_dimension: int) -> EmbeddingTable:
    embed_times: list[float] = []

    def one(name: str) -> tuple[np.ndarray | None, list[str]]:
        pixels = decode_image((images_dir / name).read_bytes(), max_dimension)
        analysis = engine.analyze(pixels, embed_if_poor=True)
        if "embed" in analysis.timings_ms:
            embed_times.append(analysis.timings_ms["embed"])
        reasons = [r for r in analysis.quality.reasons if r in BLOCKING and r != NO_FACE]
        return (analysis.embedding.vector if analysis.embedding else None), reasons

    started = time.perf_counter()
    with ThreadPoolExecutor(2) as pool:
        results = list(progress(pool.map(one, names), "LFW images", total=len(names), unit="img"))
    vectors = np.zeros((len(names), engine.embedder_dimension), dtype=np.float32)
    no_face, poor = [], {}
    for i, (name, (vector, reasons)) in enumerate(zip(names, results, strict=True)):
        if vector is None:
            no_face.append(name)
        else:
            vectors[i] = vector
        if reasons:
            poor[name] = reasons
    seconds = time.perf_counter() - started
    return EmbeddingTable(names, vectors, no_face, poor, seconds, float(np.mean(embed_times)) if embed_times else 0.0)


def scores_for(table: EmbeddingTable, pairs: list[Pair]) -> np.ndarray:
    index = table.index()
    a = table.vectors[[index[p.a] for p in pairs]]
    b = table.vectors[[index[p.b] for p in pairs]]
    return np.einsum("ij,ij->i", a, b)


def best_threshold(scores: np.ndarray, same: np.ndarray) -> float:
    candidates = np.unique(scores)
    accuracies = [((scores >= t) == same).mean() for t in candidates]
    return float(candidates[int(np.argmax(accuracies))])


def roc_auc(scores: np.ndarray, same: np.ndarray) -> float:
    order = np.argsort(scores)
    ranks = np.empty(len(scores))
    ranks[order] = np.arange(1, len(scores) + 1)
    positives = same.sum()
    negatives = len(same) - positives
    return float((ranks[same].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def tar_at_far(scores: np.ndarray, same: np.ndarray, far: float) -> float:
    impostor = np.sort(scores[~same])
    threshold = impostor[min(len(impostor) - 1, int(np.ceil(len(impostor) * (1 - far))))]
    return float((scores[same] > threshold).mean())


def ten_fold(scores: np.ndarray, pairs: list[Pair]) -> dict[str, object]:
    same = np.array([p.same for p in pairs])
    folds = np.array([p.fold for p in pairs])
    if len(set(folds.tolist())) == 1:  # View 1 files have one fold: split them into 10 interleaved folds
        folds = np.arange(len(pairs)) % 10
    accuracies = []
    for fold in sorted(set(folds.tolist())):
        train, test = folds != fold, folds == fold
        threshold = best_threshold(scores[train], same[train])
        accuracies.append(float(((scores[test] >= threshold) == same[test]).mean()))
    return {
        "accuracy_mean": float(np.mean(accuracies)),
        "accuracy_std": float(np.std(accuracies)),
        "fold_accuracies": accuracies,
        "tar_at_far_1e-3": tar_at_far(scores, same, 1e-3),
        "auc": roc_auc(scores, same),
    }


class AtThreshold(BaseModel):
    threshold: float
    false_match_rate: float
    false_non_match_rate: float


class Refusals(BaseModel):
    """The quality gate of /match on these pairs: what it refuses, and how often the refused images would have been
    decided wrongly had they been let through (the gate is justified only if that is well above the rest's)."""

    images_by_reason: dict[str, list[str]]
    error_rate_by_reason: dict[str, float]  # pairs with an image refused for this reason, let through
    pairs_by_reason: dict[str, int]
    refused_pairs: int
    error_rate_refused_pairs: float  # decided at the default threshold anyway
    error_rate_other_pairs: float
    accuracy_as_match_decides: float  # on the pairs /match answers (refused pairs left out)


class LfwResult(BenchResult):
    profile: str = "fast"
    accuracy_mean: float
    accuracy_std: float
    fold_accuracies: list[float]
    tar_at_far_1e_3: float = Field(alias="tar_at_far_1e-3")
    auc: float
    pairs_file: str
    pairs: int
    images: int
    model: str
    detector: str
    no_face_images: int
    no_face_handling: str
    poor_quality_images: int
    poor_quality_handling: str
    ms_per_image: float
    embed_ms_per_face: float = 0.0
    inference_memory_mb: float | None = None
    at_default_threshold: AtThreshold
    refusals: Refusals | None = None

    def report(self) -> str:
        at = self.at_default_threshold
        return (
            f"LFW {self.pairs_file}: {self.pairs} pairs, {self.images} images, "
            f"model {self.model}, detector {self.detector}\n"
            f"accuracy {100 * self.accuracy_mean:.2f} % ± {100 * self.accuracy_std:.2f} (10-fold)\n"
            f"TAR at FAR 1e-3: {100 * self.tar_at_far_1e_3:.2f} %   AUC: {self.auc:.5f}\n"
            f"at similarity_score {at.threshold}: FMR {100 * at.false_match_rate:.3f} %, "
            f"FNMR {100 * at.false_non_match_rate:.2f} %\n"
            f"no face found: {self.no_face_images} images ({self.no_face_handling})\n"
            f"poor quality: {self.poor_quality_images} images ({self.poor_quality_handling})\n"
            f"{self.ms_per_image:.1f} ms per image (decode + detect + quality + embed, 2 threads); embedding "
            f"{self.embed_ms_per_face:.1f} ms per face"
            + (f"; the engine's resident memory {self.inference_memory_mb:.0f} MB" if self.inference_memory_mb else "")
            + ("\n" + self._refusals() if self.refusals else "")
        )

    def _refusals(self) -> str:
        r = self.refusals
        assert r is not None
        reasons = ", ".join(f"{k} {len(v)} images ({r.pairs_by_reason.get(k, 0)} pairs, wrong "
                            f"{100 * r.error_rate_by_reason.get(k, 0):.1f} % when let through)"
                            for k, v in sorted(r.images_by_reason.items())) or "none"  # fmt: skip
        return (
            f"as /match decides at {self.at_default_threshold.threshold} (pairs with a refused image answered 422): "
            f"accuracy {100 * r.accuracy_as_match_decides:.2f} % on {self.pairs - r.refused_pairs} pairs; refused "
            f"images: {reasons}; {r.refused_pairs} pairs refused in all, wrong "
            f"{100 * r.error_rate_refused_pairs:.1f} % of the time when let through vs "
            f"{100 * r.error_rate_other_pairs:.2f} % for the others"
        )


class ProfilesResult(BenchResult):
    """One benchmark run per matching profile, side by side."""

    results: dict[str, LfwResult]

    def report(self) -> str:
        rows = ["profile   model                           10-fold accuracy   TAR@FAR1e-3  as /match decides  "
                "embed/face  memory"]  # fmt: skip
        for name, r in self.results.items():
            decided = f"{100 * r.refusals.accuracy_as_match_decides:.2f} %" if r.refusals else "-"
            memory = f"{r.inference_memory_mb:.0f} MB" if r.inference_memory_mb else "-"
            accuracy = f"{100 * r.accuracy_mean:6.2f} % ± {100 * r.accuracy_std:.2f}"
            rows.append(f"{name:<9} {r.model:<31} {accuracy}   {100 * r.tar_at_far_1e_3:8.2f} %  {decided:>17}  "
                        f"{r.embed_ms_per_face:7.1f} ms  {memory}")  # fmt: skip
        return side_by_side(rows, self.results)


def add_parser(bench: argparse._SubParsersAction) -> None:
    parser = bench.add_parser("lfw", help="LFW 10-fold verification accuracy through the API's pipeline")
    parser.add_argument("--lfw-dir", type=Path, required=True)
    parser.add_argument("--pairs", type=Path, help="pairs file (default: LFW_DIR/pairs.txt, View 2)")
    parser.add_argument("--detector", choices=["yunet", "mtcnn"], help="override matching.detector")
    parser.add_argument("--profile", choices=["fast", "accurate", "both"], help="default: matching.profile")
    parser.set_defaults(bench_main=main)


def profiles_of(choice: str | None, settings: Settings) -> list[str]:
    return ["fast", "accurate"] if choice == "both" else [choice or settings.matching.profile]


def main(args: argparse.Namespace, settings: Settings) -> LfwResult | ProfilesResult:
    results = {p: run_lfw(profile_settings(settings, p), args.lfw_dir, args.pairs, args.detector)
               for p in profiles_of(args.profile, settings)}  # fmt: skip
    return next(iter(results.values())) if len(results) == 1 else ProfilesResult(results=results)


def engine_memory_mb(settings: Settings) -> float | None:
    """Resident memory of a process that has loaded the profile's engine, as the inference daemon does (Linux)."""
    script = ("from edge.config import load_settings; from edge.vision.engine import FaceEngine; "
              "engine = FaceEngine(load_settings()); "
              "print(next(l.split()[1] for l in open('/proc/self/status') if l.startswith('VmRSS:')))")  # fmt: skip
    env = {**os.environ, "FACEMATCH_MATCHING__PROFILE": settings.matching.profile}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    return int(done.stdout.split()[-1]) / 1024 if done.returncode == 0 and done.stdout.strip() else None


def refusals_for(table: EmbeddingTable, pairs: list[Pair], decided_same: np.ndarray) -> Refusals:
    same = np.array([p.same for p in pairs])
    refused_images = set(table.no_face) | set(table.poor_quality)
    refused = np.array([p.a in refused_images or p.b in refused_images for p in pairs])
    wrong = decided_same != same
    by_reason: dict[str, list[str]] = {}
    for name in table.no_face:
        by_reason.setdefault(NO_FACE, []).append(name)
    for name, reasons in table.poor_quality.items():
        for reason in reasons:
            by_reason.setdefault(reason, []).append(name)
    groups = {reason: set(names) for reason, names in by_reason.items()}
    involved = {reason: np.array([p.a in names or p.b in names for p in pairs]) for reason, names in groups.items()}
    return Refusals(
        images_by_reason={k: sorted(v) for k, v in by_reason.items()}, refused_pairs=int(refused.sum()),
        error_rate_by_reason={k: float(wrong[m].mean()) for k, m in involved.items() if m.any()},
        pairs_by_reason={k: int(m.sum()) for k, m in involved.items()},
        error_rate_refused_pairs=float(wrong[refused].mean()) if refused.any() else 0.0,
        error_rate_other_pairs=float(wrong[~refused].mean()),
        accuracy_as_match_decides=float(1 - wrong[~refused].mean()),
    )  # fmt: skip


def run_lfw(settings: Settings, lfw_dir: Path, pairs_file: Path | None, detector: str | None) -> LfwResult:
    pairs_file = pairs_file or lfw_dir / "pairs.txt"
    images_dir = lfw_dir / "images"
    pairs = [p for p in read_pairs(pairs_file) if (images_dir / p.a).exists() and (images_dir / p.b).exists()]
    engine = FaceEngine(settings, detector=detector)
    names = sorted({p.a for p in pairs} | {p.b for p in pairs})
    table = embed_images(engine, images_dir, names, settings.http.max_image_dimension)
    scores = scores_for(table, pairs)
    result = ten_fold(scores, pairs)
    calibrated = np.array([engine.calibration.score(float(s)) for s in scores])
    same = np.array([p.same for p in pairs])
    threshold = settings.matching.similarity_threshold
    decided_same = calibrated >= threshold
    result.update(
        profile=settings.matching.profile,
        embed_ms_per_face=table.embed_ms,
        inference_memory_mb=engine_memory_mb(settings),
        refusals=refusals_for(table, pairs, decided_same),
        pairs_file=str(pairs_file),
        pairs=len(pairs),
        images=len(names),
        model=engine.model_id,
        detector=engine.detector.name,
        no_face_images=len(table.no_face),
        no_face_handling="pairs with an image where no face was found score 0 (non-match)",
        poor_quality_images=len(table.poor_quality),
        poor_quality_handling="embedded anyway (the API would refuse them with the named reason)",
        ms_per_image=1000 * table.seconds / max(1, len(names)),
        at_default_threshold={
            "threshold": threshold,
            "false_match_rate": float((calibrated[~same] >= threshold).mean()),
            "false_non_match_rate": float((calibrated[same] < threshold).mean()),
        },
    )
    return LfwResult.model_validate(result)


def profile_settings(settings: Settings, profile: str, embedder: str | None = None) -> Settings:
    """``settings`` with another matching profile (and, for ``fast``, another embedder)."""
    update: dict[str, object] = {"profile": profile}
    if embedder:
        update.update(embedder=embedder, flip_embedding=True)
    return settings.model_copy(update={"matching": settings.matching.model_copy(update=update)})


def _impostor_cosines(table: EmbeddingTable, sample: list[str], view2: set[frozenset[str]]) -> np.ndarray:
    """Cosines between images of different people among ``sample``, leaving out every View 2 pair."""
    index = table.index()
    rows = np.array([index[n] for n in sample if n not in table.no_face])
    identity = np.array([table.names[i].split("/")[0] for i in rows])
    similarity = table.vectors[rows] @ table.vectors[rows].T
    keep = np.triu(np.ones_like(similarity, dtype=bool), 1) & (identity[:, None] != identity[None, :])
    for a, b in zip(*np.nonzero(keep), strict=True):
        if frozenset((table.names[rows[a]], table.names[rows[b]])) in view2:
            keep[a, b] = False
    return similarity[keep]


def calibrate(settings: Settings, lfw_dir: Path, impostor_images: int = 3000, seed: int = 7) -> Path:
    """Fit the calibration on View 1 genuine pairs and impostor pairs drawn among LFW identities (View 2 pairs left
    out); for the ``accurate`` profile, first the fusion's statistics on the same impostor pairs."""
    images_dir = lfw_dir / "images"
    view1 = read_pairs(lfw_dir / "pairsDevTrain.txt") + read_pairs(lfw_dir / "pairsDevTest.txt")
    view1 = [p for p in view1 if (images_dir / p.a).exists() and (images_dir / p.b).exists()]
    view2 = {frozenset((p.a, p.b)) for p in read_pairs(lfw_dir / "pairs.txt")}
    everyone = sorted(str(p.relative_to(images_dir)) for p in images_dir.glob("*/*.jpg"))
    sample = random.Random(seed).sample(everyone, min(impostor_images, len(everyone)))
    names = sorted(set(sample) | {p.a for p in view1} | {p.b for p in view1})
    source = "LFW View 1 genuine pairs; impostor pairs among a random sample of LFW images (View 2 pairs excluded)"
    meta = {"source": source, "created": time.strftime("%Y-%m-%d")}
    if settings.matching.profile == "accurate":
        tables = []
        for embedder in settings.matching.accurate_embedders:
            engine = FaceEngine(profile_settings(settings, "fast", embedder), calibrated=False)
            tables.append((engine.model_id, embed_images(engine, images_dir, names, settings.http.max_image_dimension)))
        fusion = Fusion.fit(tuple(m for m, _ in tables), [_impostor_cosines(t, sample, view2) for _, t in tables],
                            {**meta, "rule": "z-scored cosines (mean and spread of the impostor cosines)"})  # fmt: skip
        print(f"fusion -> {fusion.save()}")
        first = tables[0][1]
        fused = fusion.fuse([t.vectors for _, t in tables])
        missing = sorted(set().union(*(t.no_face for _, t in tables)))
        fused[[first.index()[n] for n in missing]] = 0.0
        table = EmbeddingTable(names, fused, missing, {}, 0.0)
        model_id, detector = fusion.model_id, engine.detector.name
    else:
        engine = FaceEngine(settings, calibrated=False)
        table = embed_images(engine, images_dir, names, settings.http.max_image_dimension)
        model_id, detector = engine.model_id, engine.detector.name
    genuine = scores_for(table, [p for p in view1 if p.same])
    calibration = Calibration.fit(
        model_id, _impostor_cosines(table, sample, view2), genuine, {**meta, "detector": detector}
    )
    path = calibration.save()
    print(json.dumps(calibration.meta, indent=1))
    return path
