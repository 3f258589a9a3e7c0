"""The result of ``facematch bench gaze-calibration`` (also printed by ``bench gaze``, beside its own figures)."""

from __future__ import annotations

from pydantic import BaseModel

from edge.bench.result import BenchResult

FREE = "calibration-free"


class Rates(BaseModel):
    genuine: float
    genuine_ci: tuple[float, float]
    replay: float
    replay_ci: tuple[float, float]
    random: float
    random_ci: tuple[float, float]
    trials: int


class PersonResult(BaseModel):
    person: str
    sessions: int
    chosen_on_others: str
    free: Rates
    calibrated: Rates
    calibrations: list[dict[str, float | None]]


class GazeCalibrationResult(BenchResult):
    area_duration: float
    people: list[PersonResult]
    skipped: dict[str, str]
    every_config: dict[str, dict[str, Rates]]  # reported only (--json): choosing on these would be tuning on the data

    def report(self) -> str:
        lines = [f"per-person gaze calibration (learnt on one session, tested on the others; windows of "
                 f"{self.area_duration:g} s); genuine / replay / random-gaze pass rates, 95 % intervals:"]  # fmt: skip

        def row(label: str, r: Rates) -> str:
            return (f"  {label:<34} genuine {r.genuine:6.1%} [{r.genuine_ci[0]:.0%}-{r.genuine_ci[1]:.0%}]  replay "
                    f"{r.replay:5.1%} [{r.replay_ci[0]:.0%}-{r.replay_ci[1]:.0%}]  random {r.random:5.1%} "
                    f"[{r.random_ci[0]:.0%}-{r.random_ci[1]:.0%}]  ({r.trials} each)")  # fmt: skip

        for p in self.people:
            lines.append(f"person {p.person} ({p.sessions} sessions):")
            lines.append(row(FREE, p.free))
            lines.append(row(f"calibrated, {p.chosen_on_others}", p.calibrated))
        for person, why in self.skipped.items():
            lines.append(f"person {person}: skipped ({why})")
        return "\n".join(lines)
