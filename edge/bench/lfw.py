"""LFW: the standard 10-fold verification protocol, and the score calibration, through the API's own pipeline.

Images are read as bytes and go through ``decode_image`` and ``FaceEngine.analyze`` exactly as ``/match`` does.
An image whose face fails a quality check is still embedded (the protocol needs a score for every pair) and
counted; an image with no face found gives the pair a score of 0 (a non-match) and is counted.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydantic import BaseModel, Field

from edge.bench.result import BenchResult
from edge.config import Settings
from edge.progress import progress
from edge.vision.calibration import Calibration
from edge.vision.decode import decode_image
from edge.vision.engine import FaceEngine
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

    def index(self) -> dict[str, int]:
        return {name: i for i, name in enumerate(self.names)}


def embed_images(engine: FaceEngine, images_dir: Path, names: list[str], max_dimension: int) -> EmbeddingTable:
    def one(name: str) -> tuple[np.ndarray | None, list[str]]:
        pixels = decode_image((images_dir / name).read_bytes(), max_dimension)
        analysis = engine.analyze(pixels, embed_if_poor=True)
        reasons = [r for r in analysis.quality.reasons if r in BLOCKING and r != NO_FACE]
        return (analysis.embedding.vector if analysis.embedding else None), reasons

    started = time.perf_counter()
    with ThreadPoolExecutor(2) as pool:
        results = list(progress(pool.map(one, names), "LFW images", total=len(names), unit="img"))
    vectors = np.zeros((len(names), 128), dtype=np.float32)
    no_face, poor = [], {}
    for i, (name, (vector, reasons)) in enumerate(zip(names, results, strict=True)):
        if vector is None:
            no_face.append(name)
        else:
            vectors[i] = vector
        if reasons:
            poor[name] = reasons
    return EmbeddingTable(names, vectors, no_face, poor, time.perf_counter() - started)


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


class LfwResult(BenchResult):
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
    at_default_threshold: AtThreshold

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
            f"{self.ms_per_image:.1f} ms per image (decode + detect + quality + embed, 2 threads)"
        )


def add_parser(bench: argparse._SubParsersAction) -> None:
    parser = bench.add_parser("lfw", help="LFW 10-fold verification accuracy through the API's pipeline")
    parser.add_argument("--lfw-dir", type=Path, required=True)
    parser.add_argument("--pairs", type=Path, help="pairs file (default: LFW_DIR/pairs.txt, View 2)")
    parser.add_argument("--detector", choices=["yunet", "mtcnn"], help="override matching.detector")
    parser.set_defaults(bench_main=main)


def main(args: argparse.Namespace, settings: Settings) -> LfwResult:
    return run_lfw(settings, args.lfw_dir, args.pairs, args.detector)


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
    result.update(
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


def calibrate(settings: Settings, lfw_dir: Path, impostor_images: int = 3000, seed: int = 7) -> Path:
    """Fit the calibration on View 1 genuine pairs and impostor pairs drawn among LFW identities."""
    images_dir = lfw_dir / "images"
    view1 = read_pairs(lfw_dir / "pairsDevTrain.txt") + read_pairs(lfw_dir / "pairsDevTest.txt")
    view1 = [p for p in view1 if (images_dir / p.a).exists() and (images_dir / p.b).exists()]
    view2 = {frozenset((p.a, p.b)) for p in read_pairs(lfw_dir / "pairs.txt")}
    everyone = sorted(str(p.relative_to(images_dir)) for p in images_dir.glob("*/*.jpg"))
    sample = random.Random(seed).sample(everyone, min(impostor_images, len(everyone)))
    names = sorted(set(sample) | {p.a for p in view1} | {p.b for p in view1})
    engine = FaceEngine(settings, calibrated=False)
    table = embed_images(engine, images_dir, names, settings.http.max_image_dimension)
    index = table.index()
    genuine = scores_for(table, [p for p in view1 if p.same])
    rows = np.array([index[n] for n in sample if n not in table.no_face])
    identity = np.array([table.names[i].split("/")[0] for i in rows])
    similarity = table.vectors[rows] @ table.vectors[rows].T
    upper = np.triu(np.ones_like(similarity, dtype=bool), 1)
    different = identity[:, None] != identity[None, :]
    keep = upper & different
    for a, b in zip(*np.nonzero(keep), strict=True):
        if frozenset((table.names[rows[a]], table.names[rows[b]])) in view2:
            keep[a, b] = False
    impostor = similarity[keep]
    meta = {
        "source": "LFW View 1 genuine pairs; impostor pairs among a random sample of LFW images "
        "(View 2 pairs excluded)",
        "detector": engine.detector.name,
        "created": time.strftime("%Y-%m-%d"),
    }
    calibration = Calibration.fit(engine.model_id, impostor, genuine, meta)
    path = calibration.save()
    print(json.dumps(calibration.meta, indent=1))
    return path
