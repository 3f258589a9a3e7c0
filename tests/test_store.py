import threading

import pytest

from edge.store import SessionConflict, SessionState, Store, StoreUnavailable, keys


@pytest.fixture
def store(settings):
    store = Store(settings.redis.url)
    yield store
    store.close()


def test_key_names_have_one_prefix():
    assert keys.session("abc") == "fm:session:abc"
    assert keys.faces("s1") == "fm:faces:s1"
    assert keys.audit() == "fm:audit"


def test_session_round_trip_with_ttl(store, settings):
    store.create_session("s1", {"sequence": [3, 1, 5], "api_key": "k1"}, ttl=60)
    doc = store.get_session("s1")
    assert doc["state"] == "pending" and doc["sequence"] == [3, 1, 5] and doc["created"] > 0
    import redis

    ttl = redis.Redis.from_url(settings.redis.url).ttl(keys.session("s1"))
    assert 0 < ttl <= 60
    assert store.get_session("unknown") is None


def test_session_ids_cannot_be_reused(store):
    store.create_session("dup", {}, ttl=60)
    with pytest.raises(SessionConflict):
        store.create_session("dup", {}, ttl=60)


def test_transition_happens_exactly_once_under_concurrency(store):
    store.create_session("race", {"sequence": []}, ttl=60)
    winners, losers = [], []
    barrier = threading.Barrier(8)

    def submit(i):
        barrier.wait()
        try:
            store.transition("race", SessionState.PENDING, SessionState.SUBMITTED, by=i)
            winners.append(i)
        except SessionConflict as exc:
            losers.append(exc.found)

    threads = [threading.Thread(target=submit, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(winners) == 1 and losers == ["submitted"] * 7
    doc = store.get_session("race")
    assert doc["state"] == "submitted" and doc["by"] == winners[0] and doc["sequence"] == []


def test_transition_keeps_the_ttl_and_reports_missing(store, settings):
    import redis

    store.create_session("t", {}, ttl=100)
    store.transition("t", SessionState.PENDING, SessionState.SUBMITTED)
    assert redis.Redis.from_url(settings.redis.url).ttl(keys.session("t")) > 90
    with pytest.raises(SessionConflict) as info:
        store.transition("gone", SessionState.PENDING, SessionState.SUBMITTED)
    assert info.value.found == "missing"


def test_unreachable_redis_is_a_clear_error():
    store = Store("redis://127.0.0.1:1/0", socket_timeout=0.5)
    assert store.ping() is False
    with pytest.raises(StoreUnavailable, match=r"Redis at redis://127.0.0.1:1/0 is unreachable"):
        store.get_session("x")
    with pytest.raises(StoreUnavailable):
        store.create_session("x", {}, ttl=10)
