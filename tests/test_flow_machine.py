"""The door flow's rules without models or I/O."""

from edge.flow.machine import Abort, ChallengeWatch, FlowRules, Sighting, Steadiness

RULES = FlowRules(min_eye_distance=40, steady_frames=3, steady_seconds=0.3, max_drift=0.25, face_lost_seconds=1.0,
                  second_face_frames=3, stall_seconds=1.5)  # fmt: skip


def face(t: float, x: float = 320, eyes: float = 60, faces: int = 1) -> Sighting:
    return Sighting(t, faces, (x, 240), eyes)


def test_a_walk_up_starts_when_one_large_face_stays_still():
    steady = Steadiness(RULES)
    assert not steady.update(face(0.0)) and not steady.update(face(0.1))
    assert steady.update(face(0.3))  # three frames over 0.3 s
    steady.reset()
    assert not any(steady.update(face(t / 10, eyes=20)) for t in range(10))  # passing by, far away
    assert not any(steady.update(face(t / 10, faces=2)) for t in range(10))  # two people
    assert not any(steady.update(face(t / 10, x=320 + 40 * t)) for t in range(10))  # walking across


def test_a_challenge_ends_when_the_face_leaves_a_second_face_comes_or_the_camera_stalls():
    watch = ChallengeWatch(RULES, last_face=0.0, last_frame=0.0)
    assert watch.on_frame(face(0.5, faces=0)) is None  # a moment without a face is forgiven
    assert watch.on_frame(face(1.2, faces=0)) is Abort.FACE_LEFT
    watch = ChallengeWatch(RULES, last_face=0.0, last_frame=0.0)
    assert watch.on_frame(face(0.1, faces=2)) is None and watch.on_frame(face(0.2, faces=2)) is None
    assert watch.on_frame(face(0.3, faces=1)) is None  # one frame of a passer-by behind: not yet
    results = [watch.on_frame(face(0.4 + i / 10, faces=2)) for i in range(3)]
    assert results[-1] is Abort.SECOND_FACE
    watch = ChallengeWatch(RULES, last_face=0.0, last_frame=0.0)
    assert watch.on_clock(1.0) is None and watch.on_clock(1.6) is Abort.CAMERA_STALLED
