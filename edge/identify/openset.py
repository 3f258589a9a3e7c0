"""The open-set decision: a probe is "unknown" unless its best subject clears a threshold set for the gallery size.

With N enrolled faces, a stranger is falsely named when any one of N comparisons falsely matches, so the false
positive identification rate is about N × FMR. The threshold is the cosine whose per-comparison FMR (from the model's
calibration, :mod:`edge.vision.calibration`) is ``target_fpir / N``: it rises as the gallery grows. Two more rules:

- *margin*: when the runner-up subject is almost as close as the best one, the probe is not given either name;
- *negatives*: a face an operator marked "this is not X" stops X being named for a probe that is at least as close
  to that face as to X's own faces.

Pure functions; no I/O. Which data chose each parameter: docs/IDENTIFY.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import Enum

from edge.vision.calibration import DECADES, Calibration


class Outcome(str, Enum):
    IDENTIFIED = "identified"
    UNKNOWN = "unknown"


class Why(str, Enum):
    """Why the decision came out as it did (``identified`` or one reason for ``unknown``)."""

    IDENTIFIED = "identified"
    EMPTY_GALLERY = "empty_gallery"
    BELOW_THRESHOLD = "below_threshold"
    AMBIGUOUS = "ambiguous"
    MARKED_NOT_THIS_PERSON = "marked_not_this_person"


EXPLANATIONS = {
    Why.IDENTIFIED: "the best subject cleared the threshold for this gallery size",
    Why.EMPTY_GALLERY: "nobody is enrolled for this embedding model",
    Why.BELOW_THRESHOLD: "no enrolled subject is close enough for this gallery size",
    Why.AMBIGUOUS: "two subjects are almost equally close; neither name is given",
    Why.MARKED_NOT_THIS_PERSON: "the probe is as close to a face marked 'not this person' as to the subject",
}


@dataclass(frozen=True)
class OpenSetPolicy:
    """``target_fpir``: share of strangers that may be given a name. ``margin_decades``: the runner-up must be at least
    this many decades of FMR less likely than the best (0 turns the rule off). ``min_score``: the threshold never goes
    below this calibrated score (a tiny gallery is not matched more loosely than a 1:1 comparison)."""

    target_fpir: float = 0.01
    margin_decades: float = 0.0
    min_score: float = 0.6


@dataclass(frozen=True)
class Candidate:
    subject_id: str
    cosine: float  # best cosine over the subject's faces
    negative_cosine: float | None = None  # best cosine over the faces marked "not this subject"


@dataclass(frozen=True)
class Threshold:
    cosine: float
    score: float  # on the calibrated scale of /match (may exceed 1.0 for very large galleries)
    fmr_per_comparison: float
    gallery_faces: int
    target_fpir: float

    def explain(self) -> str:
        return (
            f"{self.gallery_faces} enrolled faces and a target of {self.target_fpir:g} strangers named: each "
            f"comparison may falsely match at most {self.fmr_per_comparison:.2g} (cosine {self.cosine:.4f})"
        )


@dataclass(frozen=True)
class Decision:
    outcome: Outcome
    why: Why
    threshold: Threshold
    subject_id: str | None = None
    candidates: list[Candidate] = field(default_factory=list)


def threshold_for(calibration: Calibration, gallery_faces: int, policy: OpenSetPolicy) -> Threshold:
    fmr = policy.target_fpir / max(gallery_faces, 1)
    cosine = calibration.cosine_for_fmr(fmr)
    floor = calibration.cosine_for(policy.min_score)
    if floor > cosine:
        cosine, fmr = floor, calibration.fmr(floor)
    # Not clipped at 1.0 like a comparison's score: the threshold of a large gallery lies past it.
    return Threshold(cosine, _decades(fmr) / DECADES, fmr, gallery_faces, policy.target_fpir)


def decide(
    candidates: list[Candidate], threshold: Threshold, calibration: Calibration, policy: OpenSetPolicy
) -> Decision:
    """``candidates``: the best subjects, best first (at least two when there are two, for the margin rule)."""
    if not candidates:
        return Decision(Outcome.UNKNOWN, Why.EMPTY_GALLERY, threshold)
    usable = [c for c in candidates if c.negative_cosine is None or c.negative_cosine < c.cosine]
    if not usable or usable[0].cosine < threshold.cosine:
        marked = usable != candidates and candidates[0].cosine >= threshold.cosine
        why = Why.MARKED_NOT_THIS_PERSON if marked else Why.BELOW_THRESHOLD
        return Decision(Outcome.UNKNOWN, why, threshold, None, candidates)
    best = usable[0]
    if policy.margin_decades > 0 and len(usable) > 1:
        decades_apart = _decades(calibration.fmr(best.cosine)) - _decades(calibration.fmr(usable[1].cosine))
        if decades_apart < policy.margin_decades:
            return Decision(Outcome.UNKNOWN, Why.AMBIGUOUS, threshold, None, candidates)
    return Decision(Outcome.IDENTIFIED, Why.IDENTIFIED, threshold, best.subject_id, candidates)


def _decades(fmr: float) -> float:
    return -math.log10(max(fmr, 1e-300))
