"""``facematch bench identify``: open-set 1:N identification on LFW, search time, and ``/identify`` end to end.

Protocol (the issue's): among the LFW images, the people with at least two photos are enrolled with one photo each
(the first that passes the quality checks) and their other photos are mated probes; the people with one photo are
the strangers (non-mated probes). Images go through ``decode_image`` and ``FaceEngine.analyze`` as ``/identify``
does; a probe refused for quality is counted apart (``refused``), as ``/identify`` would answer 422 for it.

Figures per gallery size (100, 1,000, every enrolled person; smaller galleries are seeded random subsets):

- rank-1 identification rate of the mated probes;
- FNIR at FPIR 1 % and 0.1 %, the threshold taken where the strangers' best scores reach that FPIR (the usual
  "oracle" operating point, as in NIST FRVT 1:N);
- at the **default setting** (the configured ``gallery.target_fpir``, threshold from the calibration and the gallery's
  size, no look at these probes): the FPIR reached and the FNIR it costs.

"This is not X" is measured on strangers with several photos (people left out of a 1,000-person gallery): each
stranger photo that is given someone's name is marked as a negative of that subject, and the stranger's other photos
are probed again.
"""

from __future__ import annotations

import argparse
import base64
import random
import statistics
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
from pydantic import BaseModel

from edge.bench.lfw import EmbeddingTable, embed_images, profile_settings, profiles_of
from edge.bench.match import photo_640x480, resident_mb, running_stack
from edge.bench.result import BenchError, BenchResult, side_by_side
from edge.config import Settings
from edge.identify.index import Entry, GalleryIndex
from edge.identify.openset import OpenSetPolicy, threshold_for
from edge.inference.gallery import open_set_policy
from edge.vision.calibration import Calibration
from edge.vision.engine import FaceEngine
from edge.vision.model_id import first_stage_dimension


@dataclass
class Protocol:
    names: list[str]  # person per enrolled row
    enrolled: np.ndarray  # rows of the table
    mated: list[tuple[int, int]]  # (table row, index into enrolled)
    strangers: np.ndarray  # table rows
    refused_mated: int
    refused_strangers: int


def build_protocol(table: EmbeddingTable) -> Protocol:
    refused = set(table.no_face) | set(table.poor_quality)
    people: dict[str, list[int]] = defaultdict(list)
    for row, name in enumerate(table.names):
        people[name.split("/")[0]].append(row)
    names, enrolled, mated, strangers = [], [], [], []
    refused_mated = refused_strangers = 0
    for person in sorted(people):
        rows = people[person]
        if len(rows) == 1:
            if table.names[rows[0]] in refused:
                refused_strangers += 1
            else:
                strangers.append(rows[0])
            continue
        usable = [r for r in rows if table.names[r] not in refused]
        if not usable:
            continue
        names.append(person)
        enrolled.append(usable[0])
        for r in rows:
            if r == usable[0]:
                continue
            if table.names[r] in refused:
                refused_mated += 1
            else:
                mated.append((r, len(enrolled) - 1))
    return Protocol(names, np.array(enrolled), mated, np.array(strangers), refused_mated, refused_strangers)


class SizeFigures(BaseModel):
    gallery: int
    mated_probes: int
    strangers: int
    rank1: float
    fnir_at_fpir_1pct: float
    fnir_at_fpir_01pct: float
    default_threshold_cosine: float
    default_fpir: float
    default_fnir: float
    default_fpir_over_target: float


def figures_for(table: EmbeddingTable, protocol: Protocol, people: list[int], calibration: Calibration,
                policy: OpenSetPolicy) -> SizeFigures:  # fmt: skip
    vectors = table.vectors
    gallery = vectors[protocol.enrolled[people]]
    position = {p: i for i, p in enumerate(people)}
    mated = [(row, position[k]) for row, k in protocol.mated if k in position]
    mated_scores = vectors[[r for r, _ in mated]] @ gallery.T
    truth = np.array([k for _, k in mated])
    best_mated = mated_scores.max(axis=1)
    correct = mated_scores.argmax(axis=1) == truth
    best_strangers = (vectors[protocol.strangers] @ gallery.T).max(axis=1)

    def fnir_at(fpir: float) -> float:
        threshold = float(np.quantile(best_strangers, 1 - fpir))
        return float(1 - (correct & (best_mated > threshold)).mean())

    threshold = threshold_for(calibration, len(people), policy)
    fpir = float((best_strangers >= threshold.cosine).mean())
    return SizeFigures(
        gallery=len(people), mated_probes=len(mated), strangers=len(best_strangers), rank1=float(correct.mean()),
        fnir_at_fpir_1pct=fnir_at(0.01), fnir_at_fpir_01pct=fnir_at(0.001),
        default_threshold_cosine=threshold.cosine, default_fpir=fpir,
        default_fnir=float(1 - (correct & (best_mated >= threshold.cosine)).mean()),
        default_fpir_over_target=fpir / policy.target_fpir,
    )  # fmt: skip


class MarginFigures(BaseModel):
    margin_decades: float
    fpir: float
    fnir: float
    wrong_name_rate: float  # mated probes given another enrolled person's name


def margin_sweep(table: EmbeddingTable, protocol: Protocol, calibration: Calibration, policy: OpenSetPolicy,
                 margins: tuple[float, ...] = (0.0, 0.5, 1.0, 2.0)) -> list[MarginFigures]:  # fmt: skip
    """The margin rule at the default threshold, full gallery: reported, not tuned (the default is off)."""
    vectors = table.vectors
    gallery = vectors[protocol.enrolled]
    mated = vectors[[r for r, _ in protocol.mated]] @ gallery.T
    truth = np.array([k for _, k in protocol.mated])
    strangers = vectors[protocol.strangers] @ gallery.T
    threshold = threshold_for(calibration, len(gallery), policy).cosine
    decades = np.vectorize(lambda c: -np.log10(calibration.fmr(float(c))))

    def named(scores: np.ndarray, margin: float) -> np.ndarray:
        top2 = np.sort(scores, axis=1)[:, -2:]
        keep = top2[:, 1] >= threshold
        return keep & (decades(top2[:, 1]) - decades(top2[:, 0]) >= margin) if margin > 0 else keep

    rows = []
    for margin in margins:
        kept, right = named(mated, margin), mated.argmax(axis=1) == truth
        rows.append(
            MarginFigures(
                margin_decades=margin,
                fpir=float(named(strangers, margin).mean()),
                fnir=float(1 - (kept & right).mean()),
                wrong_name_rate=float((kept & ~right).mean()),
            )
        )
    return rows


class NegativeFigures(BaseModel):
    gallery: int
    target_fpir: float
    strangers_with_several_photos: int
    false_names_before: int = 0
    marked: int = 0
    same_name_again_before: int = 0
    same_name_again_after: int = 0
    genuine_lost: int = 0
    genuine_probes_of_marked_subjects: int = 0


def measure_negatives(table: EmbeddingTable, protocol: Protocol, calibration: Calibration, target_fpir: float,
                      seed: int) -> NegativeFigures:  # fmt: skip
    """Strangers with several photos: mark each photo given a name as "not that subject", then probe the rest."""
    rng = random.Random(seed)
    everyone = list(range(len(protocol.names)))
    gallery_people = sorted(rng.sample(everyone, min(1000, len(everyone) // 2)))
    outside = sorted(set(everyone) - set(gallery_people))
    policy = OpenSetPolicy(target_fpir=target_fpir, min_score=0.0)
    threshold = threshold_for(calibration, len(gallery_people), policy).cosine
    vectors = table.vectors
    index = GalleryIndex("bench", vectors.shape[1])
    empty = np.zeros((0, vectors.shape[1]), np.float32)
    entries = {str(k): Entry(protocol.names[k], vectors[protocol.enrolled[k]][None], empty) for k in gallery_people}
    index.load_all(dict(entries), 0)
    photos_of: dict[int, list[int]] = defaultdict(list)
    for row, k in protocol.mated:
        photos_of[k].append(row)
    figures = NegativeFigures(gallery=len(gallery_people), target_fpir=target_fpir,
                              strangers_with_several_photos=len(outside))  # fmt: skip
    marked: dict[str, list[np.ndarray]] = defaultdict(list)
    for k in outside:
        rows = [protocol.enrolled[k], *photos_of[k]]
        first, rest = rows[0], rows[1:]
        best = index.search(vectors[first], k=1)[0].candidate
        if best.cosine < threshold:
            continue
        figures.false_names_before += 1
        named = best.subject_id
        figures.marked += 1
        marked[named].append(vectors[first])
        for row in rest:
            top = index.search(vectors[row], k=1)[0].candidate
            again = top.subject_id == named and top.cosine >= threshold
            figures.same_name_again_before += int(again)
            negative = max(float(vectors[row] @ n) for n in marked[named])
            figures.same_name_again_after += int(again and negative < top.cosine)
    # What the marks cost the marked subjects themselves: their own probes now closer to a negative than to them.
    for subject, negatives in marked.items():
        k = int(subject)
        own = vectors[protocol.enrolled[k]]
        for row in photos_of[k]:
            figures.genuine_probes_of_marked_subjects += 1
            score = float(vectors[row] @ own)
            figures.genuine_lost += int(score >= threshold and max(float(vectors[row] @ n) for n in negatives) >= score)
    return figures


class SearchFigures(BaseModel):
    subjects: int
    faces_per_subject: int
    p50_ms: float
    p95_ms: float
    index_build_s: float
    two_stages: bool = False


def time_search(subjects: int, faces_per_subject: int = 1, probes: int = 200, seed: int = 0,
                dimension: int = 128, first_stage: int = 0) -> SearchFigures:  # fmt: skip
    """Search time over a synthetic gallery (random unit vectors: the cost does not depend on the values)."""
    rng = np.random.default_rng(seed)
    empty = np.zeros((0, dimension), np.float32)
    vectors = rng.standard_normal((subjects * faces_per_subject, dimension)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    entries = {f"s{i}": Entry(f"s{i}", vectors[i * faces_per_subject : (i + 1) * faces_per_subject], empty)
               for i in range(subjects)}  # fmt: skip
    index = GalleryIndex("synthetic", dimension, first_stage)
    started = time.perf_counter()
    index.load_all(entries, 1)
    index.search(vectors[0], k=5)  # packs the matrix
    build = time.perf_counter() - started
    two_stages = index.two_stages
    timings = []
    for _ in range(probes):
        probe = rng.standard_normal(dimension).astype(np.float32)
        probe /= np.linalg.norm(probe)
        began = time.perf_counter()
        index.search(probe, k=5)
        timings.append(time.perf_counter() - began)
    return SearchFigures(subjects=subjects, faces_per_subject=faces_per_subject,
                         p50_ms=1000 * statistics.median(timings), p95_ms=1000 * float(np.percentile(timings, 95)),
                         index_build_s=build, two_stages=two_stages)  # fmt: skip


class TwoStageFigures(BaseModel):
    """The two-stage search against the exact one on the LFW gallery, its first stage keeping the share of rows it
    keeps at 100,000 faces (so as many rows, in proportion, compete for the kept places)."""

    gallery: int
    kept_rows: int
    probes: int
    top1_differs: int
    decisions_differ: int  # named at the default threshold by one search and not (or someone else) by the other


def compare_two_stages(table: EmbeddingTable, protocol: Protocol, calibration: Calibration, policy: OpenSetPolicy,
                       first_stage: int) -> TwoStageFigures:  # fmt: skip
    vectors = table.vectors
    empty = np.zeros((0, vectors.shape[1]), np.float32)
    entries = {str(k): Entry(name, vectors[row][None], empty)
               for k, (name, row) in enumerate(zip(protocol.names, protocol.enrolled, strict=True))}  # fmt: skip
    exact = GalleryIndex("bench", vectors.shape[1])
    staged = GalleryIndex("bench", vectors.shape[1], first_stage, two_stage_rows=0, min_kept=1)
    for index in (exact, staged):
        index.load_all(dict(entries), 0)
    threshold = threshold_for(calibration, len(entries), policy).cosine
    probes = [r for r, _ in protocol.mated] + list(protocol.strangers)
    top1_differs = decisions_differ = 0
    for row in probes:
        want, got = (i.search(vectors[row], k=1)[0].candidate for i in (exact, staged))
        top1_differs += want.subject_id != got.subject_id
        named = [c.subject_id if c.cosine >= threshold else None for c in (want, got)]
        decisions_differ += named[0] != named[1]
    kept = staged.kept_rows(len(entries))
    return TwoStageFigures(gallery=len(entries), kept_rows=kept, probes=len(probes), top1_differs=top1_differs,
                           decisions_differ=decisions_differ)  # fmt: skip


class EndToEnd(BaseModel):
    enrolled: int
    runs: int
    identify_p50_ms: float
    identify_p95_ms: float
    match_p50_ms: float
    ratio_identify_to_match: float
    resident_mb: dict[str, float] = {}


def time_endpoints(lfw_images: Path, protocol: Protocol, table: EmbeddingTable, runs: int, profile: str) -> EndToEnd:
    """``facematch up`` on free ports; enrol 50 people; /identify and /match (the same photo on both sides: the two
    sides run in parallel, so its time is one side's) on a 640×480 photo, alternated."""
    enrolled = min(50, len(protocol.names))
    profile_env = {"FACEMATCH_MATCHING__PROFILE": profile}
    with (
        tempfile.TemporaryDirectory(prefix="facematch-bench-") as tmp,
        running_stack(Path(tmp), extra_env=profile_env) as (url, key, pid),
    ):
        client = httpx.Client(base_url=url, headers={"X-API-Key": key}, timeout=60)
        for k in range(enrolled):
            image = base64.b64encode((lfw_images / table.names[protocol.enrolled[k]]).read_bytes()).decode()
            body = {"name": protocol.names[k], "photos": [image], "allow_mixup": True}
            client.post("/subjects", json=body).raise_for_status()
        photo = base64.b64encode(photo_640x480(lfw_images / table.names[protocol.mated[0][0]])).decode()
        identify, match = [], []
        for i in range(runs + 2):  # two warm-up rounds
            began = time.perf_counter()
            client.post("/identify", json={"image": photo}).raise_for_status()
            middle = time.perf_counter()
            client.post("/match", json={"image1": photo, "image2": photo}).raise_for_status()
            if i >= 2:
                identify.append(middle - began)
                match.append(time.perf_counter() - middle)
        client.close()
        memory = resident_mb(pid)
    p50_identify, p50_match = statistics.median(identify), statistics.median(match)
    return EndToEnd(enrolled=enrolled, runs=runs, identify_p50_ms=1000 * p50_identify,
                    identify_p95_ms=1000 * float(np.percentile(identify, 95)), match_p50_ms=1000 * p50_match,
                    ratio_identify_to_match=p50_identify / p50_match, resident_mb=memory)  # fmt: skip


class IdentifyBenchResult(BenchResult):
    profile: str = "fast"
    model: str
    embed_ms_per_face: float = 0.0
    images: int
    embed_seconds: float
    enrolled_people: int
    refused_mated_probes: int
    refused_strangers: int
    target_fpir: float
    margin_decades: float
    sizes: list[SizeFigures]
    margins: list[MarginFigures]
    negatives: list[NegativeFigures]
    search: list[SearchFigures]
    two_stages: TwoStageFigures | None = None
    endpoints: EndToEnd | None = None

    def report(self) -> str:
        lines = [
            f"LFW 1:N with {self.model}: {self.images} images embedded in {self.embed_seconds:.0f} s; "
            f"{self.enrolled_people} people enrolled (one photo each); refused for quality: "
            f"{self.refused_mated_probes} mated probes, {self.refused_strangers} strangers",
            "",
            "gallery  mated  strangers  rank-1   FNIR@FPIR1%  FNIR@FPIR0.1%  | default: threshold  FPIR (target "
            f"{self.target_fpir:g})  FNIR",
        ]
        for s in self.sizes:
            lines.append(
                f"{s.gallery:7d}  {s.mated_probes:5d}  {s.strangers:9d}  {s.rank1:6.2%}  {s.fnir_at_fpir_1pct:11.2%}  "
                f"{s.fnir_at_fpir_01pct:13.2%}  |          {s.default_threshold_cosine:.4f}  "
                f"{s.default_fpir:6.2%} ({s.default_fpir_over_target:.2f}x)   {s.default_fnir:6.2%}"
            )
        lines += ["", "margin rule at the default threshold, full gallery (configured: "
                  f"{self.margin_decades:g} decades):"]  # fmt: skip
        for m in self.margins:
            lines.append(f"  margin {m.margin_decades:g}: FPIR {m.fpir:.2%}, FNIR {m.fnir:.2%}, "
                         f"enrolled people given another's name {m.wrong_name_rate:.2%}")  # fmt: skip
        for n in self.negatives:
            lines += [
                "",
                f"'this is not X' (gallery {n.gallery}, target FPIR {n.target_fpir:g}; "
                f"{n.strangers_with_several_photos} strangers with several photos): {n.marked} stranger photos given "
                f"a name and marked; their other photos given the same name again: {n.same_name_again_before} "
                f"before marking, {n.same_name_again_after} after; the marked subjects' own probes lost: "
                f"{n.genuine_lost} of {n.genuine_probes_of_marked_subjects}",
            ]
        lines.append("")
        for t in self.search:
            stages = "; two stages" if t.two_stages else ""
            lines.append(f"search over {t.subjects:,} subjects: p50 {t.p50_ms:.2f} ms, p95 {t.p95_ms:.2f} ms "
                         f"(index built in {t.index_build_s:.2f} s{stages})")  # fmt: skip
        if self.two_stages:
            t2 = self.two_stages
            lines.append(f"two stages vs exact search, full gallery ({t2.gallery}; first stage keeping {t2.kept_rows} "
                         f"rows, the share it keeps at any size): the best candidate differs for {t2.top1_differs} "
                         f"of {t2.probes} probes; the decision at the default threshold for "
                         f"{t2.decisions_differ}")  # fmt: skip
        if self.endpoints:
            e = self.endpoints
            lines.append(f"/identify end to end ({e.enrolled} enrolled, {e.runs} runs): p50 {e.identify_p50_ms:.1f} ms "
                         f"(p95 {e.identify_p95_ms:.1f}); /match with the same photo on both sides p50 "
                         f"{e.match_p50_ms:.1f} ms; ratio {e.ratio_identify_to_match:.2f}")  # fmt: skip
            if e.resident_mb:
                lines.append(
                    "resident memory: " + ", ".join(f"{k} {v:.0f} MB" for k, v in sorted(e.resident_mb.items()))
                )
        return "\n".join(lines)


def add_parser(bench: argparse._SubParsersAction) -> None:
    parser = bench.add_parser("identify", help="open-set 1:N on LFW, search time, /identify end to end")
    parser.add_argument("--lfw-dir", type=Path, required=True, help="folder with images/ (LFW)")
    parser.add_argument("--seed", type=int, default=7, help="for the random smaller galleries")
    parser.add_argument("--runs", type=int, default=30, help="/identify and /match timings (0: skip)")
    parser.add_argument("--search-sizes", type=int, nargs="*", default=[10_000, 100_000])
    parser.add_argument(
        "--cache",
        type=Path,
        help="reuse the embeddings saved here by an earlier run (npz; one file "
        "per model: the model id is added to the name)",
    )
    parser.add_argument("--profile", choices=["fast", "accurate", "both"], help="default: matching.profile")
    parser.set_defaults(bench_main=main)


def load_table(settings: Settings, images: Path, cache: Path | None) -> tuple[EmbeddingTable, str]:
    engine = FaceEngine(settings)
    names = sorted(str(p.relative_to(images)) for p in images.glob("*/*.jpg"))
    cache = cache.with_name(f"{cache.stem}-{engine.model_id}{cache.suffix or '.npz'}") if cache else None
    if cache and cache.exists():
        saved = np.load(cache, allow_pickle=False)
        if str(saved["model"]) == engine.model_id and list(saved["names"]) == names:
            poor = {n: ["cached"] for n in saved["poor"]}
            table = EmbeddingTable(names, saved["vectors"], list(saved["no_face"]), poor, float(saved["seconds"]),
                                   float(saved["embed_ms"]) if "embed_ms" in saved else 0.0)  # fmt: skip
            return table, engine.model_id
    table = embed_images(engine, images, names, settings.http.max_image_dimension)
    if cache:
        np.savez(cache, model=engine.model_id, names=np.array(names), vectors=table.vectors,
                 no_face=np.array(table.no_face, dtype=str), poor=np.array(sorted(table.poor_quality), dtype=str),
                 seconds=table.seconds, embed_ms=table.embed_ms)  # fmt: skip
    return table, engine.model_id


class IdentifyProfilesResult(BenchResult):
    """``--profile both``: the same protocol for each matching profile, side by side."""

    results: dict[str, IdentifyBenchResult]

    def report(self) -> str:
        rows = ["profile   model                           rank-1   FNIR@FPIR1%  FNIR@FPIR0.1%  default FPIR  "
                "embed/face  /identify p50  memory (inference)"]  # fmt: skip
        for name, r in self.results.items():
            full = r.sizes[-1]
            e = r.endpoints
            timing = f"{e.identify_p50_ms:8.1f} ms" if e else "-"
            memory = f"{e.resident_mb.get('inference', 0):.0f} MB" if e and e.resident_mb else "-"
            rows.append(f"{name:<9} {r.model:<31} {full.rank1:6.2%}  {full.fnir_at_fpir_1pct:11.2%}  "
                        f"{full.fnir_at_fpir_01pct:13.2%}  {full.default_fpir:12.2%}  {r.embed_ms_per_face:7.1f} ms  "
                        f"{timing:>13}  {memory}")  # fmt: skip
        return side_by_side(rows, self.results)


def main(args: argparse.Namespace, settings: Settings) -> IdentifyBenchResult | IdentifyProfilesResult:
    images = args.lfw_dir / "images"
    if not images.is_dir():
        raise BenchError(f"no LFW images at {images}: pass --lfw-dir ../shared/data/faces/lfw_official")
    results = {p: run_profile(args, profile_settings(settings, p), images) for p in profiles_of(args.profile, settings)}
    return next(iter(results.values())) if len(results) == 1 else IdentifyProfilesResult(results=results)


def run_profile(args: argparse.Namespace, settings: Settings, images: Path) -> IdentifyBenchResult:
    table, model = load_table(settings, images, args.cache)
    calibration = Calibration.load(model)
    protocol = build_protocol(table)
    policy = open_set_policy(settings)
    everyone = list(range(len(protocol.names)))
    rng = random.Random(args.seed)
    sizes = [figures_for(table, protocol, sorted(rng.sample(everyone, n)), calibration, policy)
             for n in (100, 1000) if n < len(everyone)]  # fmt: skip
    sizes.append(figures_for(table, protocol, everyone, calibration, policy))
    negatives = [measure_negatives(table, protocol, calibration, fpir, args.seed) for fpir in (policy.target_fpir, 0.1)]
    first_stage = first_stage_dimension(settings)
    dimension = table.vectors.shape[1]
    search = [time_search(n, dimension=dimension, first_stage=first_stage) for n in args.search_sizes]
    two_stages = compare_two_stages(table, protocol, calibration, policy, first_stage) if first_stage else None
    endpoints = time_endpoints(images, protocol, table, args.runs, settings.matching.profile) if args.runs else None
    return IdentifyBenchResult(
        profile=settings.matching.profile, model=model, embed_ms_per_face=table.embed_ms,
        images=len(table.names), embed_seconds=table.seconds, enrolled_people=len(protocol.names),
        refused_mated_probes=protocol.refused_mated, refused_strangers=protocol.refused_strangers,
        target_fpir=policy.target_fpir, margin_decades=policy.margin_decades, sizes=sizes,
        margins=margin_sweep(table, protocol, calibration, policy), negatives=negatives, search=search,
        two_stages=two_stages, endpoints=endpoints,
    )  # fmt: skip
