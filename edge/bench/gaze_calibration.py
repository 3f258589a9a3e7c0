"""``facematch bench gaze-calibration``: does a per-person calibration help, on sessions it was not learnt from?

For each person with several sessions in the EyeGaze recordings, each session in turn is the *calibration* (its dwell
windows, every cell they cover, give the person's gain and row gap: ``edge/liveness/person.py``) and the person's
*other* sessions make the challenges (windows joined from them, designed sequences only, as ``bench gaze`` does):
genuine ones, replays of another sequence, and random gaze. Every challenge is judged calibration-free and with the
calibration at each candidate pair of shares (gain share, row-gap share), on the same draws.

The shares are chosen leave-one-person-out: for each person, the pair that does best on the *other* people (most
genuine passes with replays and random gaze at most 1 %; failing that, the fewest errors) is reported on this person.
"""

from __future__ import annotations

import argparse
import random
from collections import defaultdict
from dataclasses import replace
from pathlib import Path

from edge.bench.gaze import (
    GAME_HEIGHT,
    GAME_WIDTH,
    covered_sequences,
    dwell_windows,
    join,
    load_recordings,
    people_in,
    screen_size,
    wilson,
)
from edge.bench.gaze_results import FREE, GazeCalibrationResult, PersonResult, Rates
from edge.config import Settings
from edge.liveness.challenge import SEQUENCES, Challenge
from edge.liveness.person import calibrate, params_for
from edge.liveness.validator import ValidatorParams, validate

GAIN_SHARES = (0.3, 0.5, 0.7)
ROW_GAP_SHARES = (0.0, 0.3, 0.5)


def rates(outcomes: dict[str, list[bool]]) -> Rates:
    def one(kind: str) -> tuple[float, tuple[float, float]]:
        values = outcomes[kind]
        if not values:  # no challenge of this kind: nothing is known
            return 0.0, (0.0, 1.0)
        return sum(values) / len(values), wilson(sum(values), len(values))

    (g, gci), (r, rci), (w, wci) = one("genuine"), one("replay"), one("random")
    return Rates(genuine=g, genuine_ci=gci, replay=r, replay_ci=rci, random=w, random_ci=wci,
                 trials=len(outcomes["genuine"]))  # fmt: skip


def add_parser(bench: argparse._SubParsersAction) -> None:
    parser = bench.add_parser("gaze-calibration", help="per-person gaze calibration, tested on other sessions")
    parser.add_argument("--data", type=Path, required=True, help="the data folder (with gaze/eyegaze)")
    parser.add_argument("--trials", type=int, default=200, help="challenges of each kind per calibration session")
    parser.add_argument("--screen", type=screen_size, default=(GAME_WIDTH, GAME_HEIGHT), metavar="WxH")
    parser.set_defaults(bench_main=main)


def main(args: argparse.Namespace, settings: Settings) -> GazeCalibrationResult:
    from edge.inference.liveness import FRAME_INTERVAL, scoring_params
    from models import model_path

    params, _ = scoring_params(settings.liveness)
    people = people_in(args.data, settings)
    recordings = load_recordings(people, model_path(settings.models.dir, "face_landmarker"),
                                 settings.paths.state_dir / "cache" / "gaze", args.screen, FRAME_INTERVAL)  # fmt: skip
    return run(recordings, params, settings.liveness.area_duration, args.trials)


def run(
    recordings: list, params: ValidatorParams, duration: float, trials: int, seed: int = 5
) -> GazeCalibrationResult:
    rng = random.Random(seed)
    configs = [FREE] + [f"shares {g}/{r}" for g in GAIN_SHARES for r in ROW_GAP_SHARES]
    # person -> config -> kind -> outcomes
    outcomes: dict[str, dict[str, dict[str, list[bool]]]] = {}
    calibrations: dict[str, list[dict[str, float | None]]] = defaultdict(list)
    skipped: dict[str, str] = {}
    people = list(dict.fromkeys(r.person for r in recordings))
    for person in people:
        sessions = [r for r in recordings if r.person == person]
        if len(sessions) < 2:
            skipped[person] = "one session: nothing to test a calibration on"
            continue
        table = {c: {"genuine": [], "replay": [], "random": []} for c in configs}
        for calibration_session in sessions:
            learnt = calibrate([(cell, w) for cell, ws in dwell_windows(calibration_session, duration).items()
                                for w in ws])  # fmt: skip
            calibrations[person].append(learnt.to_dict())
            others = [s for s in sessions if s is not calibration_session]
            pool: dict[int, list] = defaultdict(list)
            for session in others:
                for cell, windows in dwell_windows(session, duration).items():
                    pool[cell] += windows
            sequences = covered_sequences(pool, list(SEQUENCES))
            if not sequences:
                continue
            per_config = {FREE: params}
            per_config.update({f"shares {g}/{r}": params_for(learnt, params, g, r)
                               for g in GAIN_SHARES for r in ROW_GAP_SHARES})  # fmt: skip
            for _ in range(trials):
                sequence = rng.choice(sequences)
                challenge = Challenge(sequence, duration)
                genuine = join([rng.choice(pool[c]) for c in sequence], duration)
                other = rng.choice([s for s in sequences if s != sequence] or [sequence])
                replayed = join([rng.choice(pool[c]) for c in other], duration) if other != sequence else None
                rec = rng.choice(others)
                start = rng.uniform(0, max(0.0, rec.frames[-1].t - 3 * duration))
                wander = [replace(f, t=f.t - start) for f in rec.frames if start <= f.t < start + 3 * duration]
                for config, config_params in per_config.items():
                    table[config]["genuine"].append(validate(genuine, challenge, config_params).passed)
                    if replayed is not None:
                        table[config]["replay"].append(validate(replayed, challenge, config_params).passed)
                    table[config]["random"].append(validate(wander, challenge, config_params).passed)
        if not table[FREE]["genuine"]:
            skipped[person] = "the other sessions cover no designed sequence"
            continue
        outcomes[person] = table
    every_config = {p: {c: rates(t[c]) for c in configs} for p, t in outcomes.items()}
    results = []
    for person, table in outcomes.items():
        others = [p for p in outcomes if p != person]
        if others:
            chosen = choose(configs[1:], [outcomes[p] for p in others])
            label = f"{chosen} (chosen on the others)"
        else:  # nobody else to choose on: the middle pair is shown, and it was not chosen
            chosen = configs[1 + len(configs) // 2]
            label = f"{chosen} (not chosen: no other person)"
        results.append(PersonResult(person=person, sessions=sum(1 for r in recordings if r.person == person),
                                    chosen_on_others=label, free=rates(table[FREE]), calibrated=rates(table[chosen]),
                                    calibrations=calibrations[person]))  # fmt: skip
    return GazeCalibrationResult(area_duration=duration, people=results, skipped=skipped, every_config=every_config)


def choose(configs: list[str], tables: list[dict[str, dict[str, list[bool]]]]) -> str:
    """The config with the most genuine passes among those keeping replays and random gaze at most 1 % on these
    people's outcomes; failing that, the fewest errors of the three kinds together."""

    def merged(config: str, kind: str) -> float:
        values = [v for table in tables for v in table[config][kind]]
        return sum(values) / len(values) if values else 0.0

    safe = [c for c in configs if merged(c, "replay") <= 0.01 and merged(c, "random") <= 0.01]
    if safe:
        return max(safe, key=lambda c: merged(c, "genuine"))
    return min(configs, key=lambda c: (1 - merged(c, "genuine")) + merged(c, "replay") + merged(c, "random"))
