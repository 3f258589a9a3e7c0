"""Challenge sequences on the 2×3 grid (cells 1..6, row-major: 1 2 3 / 4 5 6) and their schedule."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from itertools import permutations, product

ROWS, COLUMNS = 2, 3
SEQUENCE_LENGTH = 3


def cell_position(cell: int) -> tuple[int, int]:
    """Cell 1..6 -> (row 0..1, column 0..2)."""
    if not 1 <= cell <= ROWS * COLUMNS:
        raise ValueError(f"cell must be 1..{ROWS * COLUMNS}, got {cell}")
    return (cell - 1) // COLUMNS, (cell - 1) % COLUMNS


def cell_at(row: int, column: int) -> int:
    return row * COLUMNS + column + 1


def _designed_sequences() -> list[tuple[int, ...]]:
    """Every sequence the server may draw: each cell in its own column (all three columns, so each switch moves the
    gaze sideways, the axis the eyes show best) and both rows used."""
    sequences = []
    for columns in permutations(range(COLUMNS), SEQUENCE_LENGTH):
        for rows in product(range(ROWS), repeat=SEQUENCE_LENGTH):
            if len(set(rows)) > 1:
                sequences.append(tuple(cell_at(r, c) for r, c in zip(rows, columns, strict=True)))
    return sequences


SEQUENCES = _designed_sequences()


class SequenceError(ValueError):
    """A sequence the server would never issue."""


def check_issued(sequence: list[int] | tuple[int, ...]) -> None:
    """Raise :class:`SequenceError` unless the server could have drawn ``sequence``: its validator is designed and
    measured only for those (three columns, both rows)."""
    if tuple(sequence) not in SEQUENCES:
        raise SequenceError(
            f"{','.join(map(str, sequence))} is not a sequence the server issues: it draws 3 cells in 3 different "
            "columns using both rows (e.g. 1,5,3 or 4,2,6)"
        )


def generate_sequence() -> list[int]:
    """A uniformly random designed sequence, drawn with a cryptographic generator."""
    return list(SEQUENCES[secrets.randbelow(len(SEQUENCES))])


# Each window's length is drawn too, so that a library of recordings made for the sequences cannot answer a
# challenge: area_duration × (0.8, 0.85, …, 1.2), 9 lengths per window.
LENGTH_FACTORS = tuple(round(0.8 + 0.05 * k, 2) for k in range(9))


def draw_durations(area_duration: float, count: int = SEQUENCE_LENGTH) -> tuple[float, ...]:
    """Window lengths for one challenge, drawn with a cryptographic generator."""
    return tuple(round(area_duration * LENGTH_FACTORS[secrets.randbelow(len(LENGTH_FACTORS))], 3) for _ in range(count))


@dataclass(frozen=True)
class Window:
    index: int
    cell: int
    start: float  # seconds from the start of the challenge
    end: float

    @property
    def row(self) -> int:
        return cell_position(self.cell)[0]

    @property
    def column(self) -> int:
        return cell_position(self.cell)[1]


@dataclass(frozen=True)
class Challenge:
    """A sequence and its schedule: each window lasts ``durations[k]`` (all ``area_duration`` when not drawn)."""

    sequence: tuple[int, ...]
    area_duration: float
    durations: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        for cell in self.sequence:
            cell_position(cell)
        if any(a == b for a, b in zip(self.sequence, self.sequence[1:], strict=False)):
            raise ValueError("a cell may not follow itself")
        if self.durations is not None and (len(self.durations) != len(self.sequence) or min(self.durations) <= 0):
            raise ValueError("one positive duration per cell")

    @property
    def lengths(self) -> tuple[float, ...]:
        return self.durations or (self.area_duration,) * len(self.sequence)

    @property
    def total_duration(self) -> float:
        return round(sum(self.lengths), 3)

    def windows(self) -> list[Window]:
        windows, start = [], 0.0
        for k, (cell, length) in enumerate(zip(self.sequence, self.lengths, strict=True)):
            windows.append(Window(k, cell, round(start, 3), round(start + length, 3)))
            start += length
        return windows
