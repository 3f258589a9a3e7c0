"""The access policy on its own (pure), the audit in Redis (retention, erasure), and the policy in the door flow."""

from __future__ import annotations

import time
from datetime import datetime

import pytest

from edge.bus.messages import AccessEvent
from edge.config import DoorSettings, Hours, LockoutSettings, PolicySettings, SubjectRule
from edge.policy import AccessPolicy, Lockout, within
from edge.store import Store, keys
from edge.store.audit import Audit

WEEKDAY_9_TO_5 = [Hours(days=["mon", "tue", "wed", "thu", "fri"], start="09:00", end="17:00")]
MONDAY_10 = datetime(2026, 11, 23, 10, 0)
MONDAY_20 = datetime(2026, 11, 23, 20, 0)
SUNDAY_10 = datetime(2026, 11, 29, 10, 0)


def policy(**rules) -> AccessPolicy:
    challenge = rules.pop("challenge", True)
    return AccessPolicy(DoorSettings(challenge=challenge, policy=PolicySettings(**rules)))


def test_hours():
    assert within([], SUNDAY_10)
    assert within(WEEKDAY_9_TO_5, MONDAY_10) and not within(WEEKDAY_9_TO_5, MONDAY_20)
    assert not within(WEEKDAY_9_TO_5, SUNDAY_10)
    assert within([Hours(start="22:00", end="24:00")], datetime(2026, 11, 23, 23, 59))


def test_who_may_enter_when():
    rules = policy(access_hours=WEEKDAY_9_TO_5, min_score=0.7, subjects={
        "banned": SubjectRule(allow=False),
        "visitor": SubjectRule(valid_from="2026-11-20", valid_until="2026-11-25"),
    })  # fmt: skip
    assert rules.refusal("anyone", 0.9, MONDAY_10) is None
    assert rules.refusal("anyone", 0.9, MONDAY_20) == "outside_hours"
    assert rules.refusal("anyone", 0.65, MONDAY_10) == "score_below_policy"
    assert rules.refusal("banned", 0.99, MONDAY_10) == "not_allowed"
    assert rules.refusal("visitor", 0.9, MONDAY_10) is None
    assert rules.refusal("visitor", 0.9, datetime(2026, 11, 19, 10)) == "not_yet_valid"
    assert rules.refusal("visitor", 0.9, datetime(2026, 11, 26, 10)) == "expired"


def test_risk_tiers_decide_when_to_ask_the_challenge():
    assert policy(challenge=True).wants_challenge("a", MONDAY_10, 0.0)
    assert not policy(challenge=False).wants_challenge("a", MONDAY_10, 0.0)
    out_of_hours = policy(challenge="out_of_hours", office_hours=WEEKDAY_9_TO_5)
    assert not out_of_hours.wants_challenge("a", MONDAY_10, 0.0)
    assert out_of_hours.wants_challenge("a", MONDAY_20, 0.0) and out_of_hours.wants_challenge("a", SUNDAY_10, 0.0)
    after_failure = policy(challenge="after_failure")
    assert not after_failure.wants_challenge("a", MONDAY_10, 100.0)
    after_failure.lockout.record_denial(100.0)
    assert after_failure.wants_challenge("a", MONDAY_10, 101.0)
    assert not after_failure.wants_challenge("a", MONDAY_10, 100.0 + 301.0)  # the denial is old news
    vip = policy(challenge=True, subjects={"vip": SubjectRule(challenge=False)})
    assert not vip.wants_challenge("vip", MONDAY_10, 0.0) and vip.wants_challenge("other", MONDAY_10, 0.0)


def test_repeated_denials_lock_the_door_for_a_while():
    lockout = Lockout(failures=3, window=60, duration=120)
    for t in (0, 10):
        lockout.record_denial(t)
    assert not lockout.locked(11)
    lockout.record_denial(100)  # the first two are out of the window by now
    assert not lockout.locked(101)
    lockout.record_denial(110)
    lockout.record_denial(120)
    assert lockout.locked(121) and lockout.locked(239) and not lockout.locked(241)
    assert (
        AccessPolicy(DoorSettings(policy=PolicySettings(lockout=LockoutSettings(lockout_seconds=0)))).lockout.duration
        == 0
    )


@pytest.fixture
def audit_store(settings):
    store = Store(settings.redis.url)
    store.client.delete(keys.audit(), keys.audit_names())
    yield store
    store.close()


def test_the_audit_keeps_decisions_for_its_retention_and_forgets_erased_names(audit_store):
    from edge.store.gallery import Gallery

    gallery = Gallery(audit_store)
    sid = gallery.create_subject("Grace Hopper")
    audit = Audit(audit_store, retention_days=1)
    audit_store.client.xadd(keys.audit(), {"decision": "granted"}, id="1-0")  # an entry from 1970: long expired
    audit.record(AccessEvent(device_id="d", decision="granted", subject_id=sid, name="Grace Hopper", score=0.9))
    audit.record(AccessEvent(device_id="d", decision="unknown", reasons=["below_threshold"]))
    entries = audit.recent()
    assert [e["decision"] for e in entries] == ["unknown", "granted"]  # the expired one was purged
    assert entries[1]["name"] == "Grace Hopper" and entries[1]["subject"] == keys.audit_pseudonym(sid)
    assert sid not in str(entries)
    gallery.delete_subject(sid)
    erased = audit.recent()[1]
    assert erased["name"] is None and erased["subject"] == keys.audit_pseudonym(sid)  # a pseudonym that names nobody


def test_the_flow_applies_the_policy_before_any_door_command(make_device, data_dir):
    from tests.devicekit import FACE_THEN_NONE, frame_of

    device = make_device(FACE_THEN_NONE, challenge=False)
    sid = device.enroll("Face Video", frame_of(data_dir / FACE_THEN_NONE, 10))
    door = device.settings.door.model_copy(update={"policy": PolicySettings(subjects={sid: SubjectRule(allow=False)})})
    device.settings = device.settings.model_copy(update={"door": door})
    device.start_flow()
    device.start_camera()
    access = AccessEvent.model_validate_json(device.wait_for("/events/access").payload)
    assert access.decision == "denied" and access.reasons == ["not_allowed"] and access.subject_id == sid
    # The audit entry is written just after the event is published: wait for this event's own entry.
    deadline, entry = time.monotonic() + 5, None
    while entry is None and time.monotonic() < deadline:
        entry = next((e for e in Audit(device.store, 1).recent(20) if e["event_id"] == access.event_id), None)
        time.sleep(0.05)
    assert entry is not None and entry["decision"] == "denied" and entry["reasons"] == ["not_allowed"]
    assert not any(m.topic.endswith("/door/command") for m in device.seen + list(device.heard.queue))
