"""Calibrated similarity: the same threshold means the same false-match rate whatever the model.

``similarity_score = -log10(FMR(cosine)) / 5``, clipped to [0, 1], where FMR(c) is the share of impostor pairs whose
cosine is at least c, measured for the model on LFW (``facematch calibrate``). So a score s stands for a
false-match rate of 10^(-5 s): 0.4 -> 1e-2, 0.6 -> 1e-3 (the default threshold), 0.8 -> 1e-4, 1.0 -> 1e-5.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge.atomic import write_atomic

CALIBRATION_DIR = Path(__file__).resolve().parent.parent.parent / "models" / "calibration"
DECADES = 5.0


class CalibrationMissing(Exception):
    pass


def score_for_fmr(fmr: float) -> float:
    return float(np.clip(-np.log10(max(fmr, 1e-12)) / DECADES, 0.0, 1.0))


def fmr_for_score(score: float) -> float:
    return float(10 ** (-DECADES * score))


@dataclass(frozen=True)
class Calibration:
    model_id: str
    cosines: np.ndarray  # increasing
    scores: np.ndarray  # non-decreasing, same length
    meta: dict[str, object]

    def score(self, cosine: float) -> float:
        return float(np.interp(cosine, self.cosines, self.scores))

    def cosine_for(self, score: float) -> float:
        """The raw cosine that a calibrated threshold stands for (for the verbose output)."""
        if score >= 1.0:  # the knots stay at 1.0 past the top: the first of them
            return float(self.cosines[int(np.argmax(self.scores >= 1.0))])
        return float(np.interp(score, self.scores, self.cosines))

    def cosine_for_fmr(self, fmr: float) -> float:
        """The cosine at which one comparison falsely matches with probability ``fmr``.

        Past the score's floor of 10^-5 (1:N search over a large gallery needs 10^-6 and below), log-FMR is extended
        along the straight line through the last decade of the curve, which is already the fitted exponential tail.
        """
        if fmr >= fmr_for_score(1.0):
            return self.cosine_for(score_for_fmr(fmr))
        upper, per_decade = self._tail()
        return float(upper + (np.log10(fmr_for_score(1.0)) - np.log10(fmr)) * per_decade)

    def _tail(self) -> tuple[float, float]:
        """The cosine where the score reaches 1.0 (the knots stay at 1.0 after it), and cosines per decade of FMR
        over the last decade before it."""
        upper = self.cosine_for(1.0)
        lower = self.cosine_for(1.0 - 1.0 / DECADES)
        return upper, (upper - lower)

    def fmr(self, cosine: float) -> float:
        """The false-match rate of one comparison at ``cosine`` (the inverse of :meth:`cosine_for_fmr`)."""
        upper, per_decade = self._tail()
        if cosine <= upper:
            return fmr_for_score(self.score(cosine))
        decades = (cosine - upper) / per_decade
        return float(fmr_for_score(1.0) * 10 ** (-decades))

    @classmethod
    def load(cls, model_id: str, folder: Path = CALIBRATION_DIR) -> Calibration:
        path = folder / f"{model_id}.json"
        if not path.exists():
            raise CalibrationMissing(f"no calibration for {model_id} at {path}: run `facematch calibrate`")
        doc = json.loads(path.read_text())
        return cls(doc["model_id"], np.array(doc["cosines"]), np.array(doc["scores"]), doc.get("meta", {}))

    @classmethod
    def fit(cls, model_id: str, impostor: np.ndarray, genuine: np.ndarray, meta: dict[str, object]) -> Calibration:
        """Knots from the impostor tail: exact where there are enough impostor pairs, an exponential tail beyond."""
        impostor = np.sort(np.asarray(impostor, dtype=np.float64))
        n = len(impostor)
        knots_c, knots_s = [-1.0], [0.0]
        # Measured part: FMR down to ~30 impostor pairs above the cosine (a decent estimate).
        for target in np.logspace(0, -5, 101)[1:]:
            if target * n < 30:
                break
            c = float(np.quantile(impostor, 1 - target))
            if c > knots_c[-1]:
                knots_c.append(c)
                knots_s.append(score_for_fmr(target))
        # Beyond the measured tail: log-FMR falls linearly with the cosine (fit on the top 1 % of impostors).
        top = impostor[int(n * 0.99) :]
        fmr_top = (n - np.arange(int(n * 0.99), n)) / n
        slope, intercept = np.polyfit(top, np.log10(fmr_top), 1)
        slope = min(slope, -1e-3)
        c = knots_c[-1]
        while knots_s[-1] < 1.0 and c < 1.0:
            c = min(1.0, c + 0.01)
            knots_c.append(c)
            knots_s.append(max(knots_s[-1], score_for_fmr(10 ** (slope * c + intercept))))
        if knots_c[-1] < 1.0:
            knots_c.append(1.0)
            knots_s.append(1.0)
        genuine = np.asarray(genuine, dtype=np.float64)
        cal = cls(model_id, np.array(knots_c), np.array(knots_s), dict(meta))
        threshold = cal.cosine_for(0.6)
        cal.meta.update(
            impostor_pairs=int(n),
            genuine_pairs=len(genuine),
            cosine_at_0_6=round(threshold, 4),
            fmr_at_0_6_measured=float((impostor >= threshold).mean()),
            fnmr_at_0_6_measured=float((genuine < threshold).mean()) if len(genuine) else None,
        )
        return cal

    def save(self, folder: Path = CALIBRATION_DIR) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{self.model_id}.json"
        doc = {
            "model_id": self.model_id,
            "rule": "score = -log10(FMR(cosine)) / 5, clipped to [0, 1]",
            "meta": self.meta,
            "cosines": [round(float(c), 6) for c in self.cosines],
            "scores": [round(float(s), 6) for s in self.scores],
        }
        write_atomic(path, json.dumps(doc, indent=1) + "\n")
        return path
