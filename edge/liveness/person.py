"""Per-person gaze calibration, as ``facematch bench gaze-calibration`` measures it: how far a person's eyes move per
column and between the rows.

Only what could carry over between sessions is learnt: the *gain* (iris movement per column) and the *row gap*, never
absolute iris levels (they move between sessions of one person by more than a column). A calibrated validator asks a
challenge for a share of the person's own gain instead of the one calibration-free minimum. Measured, it cost genuine
passes at every share on the one person the data can test (docs/LIVENESS.md), so the product does not use it: the
shares are the bench's candidates, and no default is chosen.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from edge.liveness.challenge import cell_position
from edge.liveness.validator import ValidatorParams, horizontal, vertical
from edge.vision.gaze import GazeFrame

# Never below this share of the calibration-free minimum gain: a still face or a photo still has none.
GAIN_FLOOR_SHARE = 0.5


@dataclass(frozen=True)
class PersonGaze:
    gain: float | None  # horizontal iris movement per column (the validator's h), None when not measured
    row_gap: float | None  # vertical v, lower row minus upper row, None when not measured

    def to_dict(self) -> dict[str, float | None]:
        return {"gain": self.gain, "row_gap": self.row_gap}

    @classmethod
    def from_dict(cls, doc: dict[str, float | None]) -> PersonGaze:
        return cls(doc.get("gain"), doc.get("row_gap"))


def calibrate(windows: list[tuple[int, list[GazeFrame]]], settle: float = 0.6) -> PersonGaze:
    """From (cell, frames of the time it was lit, timed from its start) pairs: the person's gain and row gap."""
    h_by_column: dict[int, list[float]] = {}
    v_by_row: dict[int, list[float]] = {}
    for cell, frames in windows:
        used = [f for f in frames if f.t >= settle and f.usable]
        if len(used) < 5:
            continue
        row, column = cell_position(cell)
        h_by_column.setdefault(column, []).append(float(np.median([horizontal(f) for f in used])))
        v_by_row.setdefault(row, []).append(float(np.median([vertical(f) for f in used])))
    gain = None
    if len(h_by_column) >= 2:
        columns = sorted(h_by_column)
        gain = float(np.polyfit(columns, [np.median(h_by_column[c]) for c in columns], 1)[0])
    row_gap = None
    if len(v_by_row) == 2:
        row_gap = float(np.median(v_by_row[1]) - np.median(v_by_row[0]))
    return PersonGaze(gain, row_gap)


def params_for(person: PersonGaze | None, params: ValidatorParams, gain_share: float,
               row_gap_share: float) -> ValidatorParams:  # fmt: skip
    """The validator's settings for this person (unchanged without a usable calibration)."""
    if person is None:
        return params
    changes: dict[str, float] = {}
    if person.gain is not None and person.gain > 0:
        changes["min_gain"] = max(GAIN_FLOOR_SHARE * params.min_gain, gain_share * person.gain)
    if person.row_gap is not None and person.row_gap > 0:
        changes["min_row_gap"] = max(params.min_row_gap, row_gap_share * person.row_gap)
    return dataclasses.replace(params, **changes)
