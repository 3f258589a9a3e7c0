"""The access policy: who may open this door, when, and what proof it asks. Pure: given the time, no I/O.

The door flow asks, in order: is the door locked out after repeated denials (``locked_out``)? does this person's rule
allow them today (``not_allowed``, ``not_yet_valid``, ``expired``)? is it within the access hours
(``outside_hours``)? is the identification score high enough for this door (``score_below_policy``)? Then whether to
ask the gaze challenge: always, never, only out of office hours, or only after a denied walk-up at this door (risk
tiers; a person's own rule wins). Passive anti-spoofing is always checked.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass, field
from datetime import date, datetime, time

from edge.config import WEEKDAYS, DoorSettings, Hours, PolicySettings


def _clock(text: str) -> time:
    return time.max if text == "24:00" else time.fromisoformat(text)


def within(hours: list[Hours], when: datetime) -> bool:
    """True inside any of the windows (an empty list is every hour)."""
    if not hours:
        return True
    day, moment = WEEKDAYS[when.weekday()], when.time()
    return any(day in h.days and _clock(h.start) <= moment < _clock(h.end) for h in hours)


@dataclass
class Lockout:
    """Denied walk-ups at one door: ``failures`` of them within ``window`` seconds lock the door for ``duration``."""

    failures: int
    window: float
    duration: float
    denials: collections.deque[float] = field(default_factory=collections.deque)
    locked_until: float = 0.0

    def locked(self, now: float) -> bool:
        return now < self.locked_until

    def record_denial(self, now: float) -> None:
        self.denials.append(now)
        while self.denials and now - self.denials[0] > self.window:
            self.denials.popleft()
        if self.duration > 0 and len(self.denials) >= self.failures:
            self.locked_until = now + self.duration
            self.denials.clear()

    def recent_denial(self, now: float) -> bool:
        return bool(self.denials) and now - self.denials[-1] <= self.window


class AccessPolicy:
    def __init__(self, door: DoorSettings):
        self.door = door
        self.rules: PolicySettings = door.policy
        lockout = self.rules.lockout
        self.lockout = Lockout(lockout.failures, lockout.window_seconds, lockout.lockout_seconds)

    def refusal(self, subject_id: str, score: float | None, when: datetime) -> str | None:
        """Why an identified person may not enter now, or None."""
        rule = self.rules.subjects.get(subject_id)
        today = when.date()
        if rule is not None:
            if not rule.allow:
                return "not_allowed"
            if rule.valid_from and today < date.fromisoformat(rule.valid_from):
                return "not_yet_valid"
            if rule.valid_until and today > date.fromisoformat(rule.valid_until):
                return "expired"
        if not within(self.rules.access_hours, when):
            return "outside_hours"
        if self.rules.min_score is not None and (score is None or score < self.rules.min_score):
            return "score_below_policy"
        return None

    def wants_challenge(self, subject_id: str | None, when: datetime, now: float) -> bool:
        rule = self.rules.subjects.get(subject_id or "")
        if rule is not None and rule.challenge is not None:
            return rule.challenge
        tier = self.door.challenge
        if tier == "out_of_hours":
            return not within(self.rules.office_hours, when)
        if tier == "after_failure":
            return self.lockout.recent_denial(now)
        return bool(tier)
