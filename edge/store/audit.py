"""The audit of access decisions: a Redis stream kept for ``door.audit_retention_days``.

Entries name the subject by a pseudonym (a hash of its id), and the names sit apart in ``fm:audit:names``: erasing a
subject deletes its name there and nothing else, so the audit keeps its history under an id that names nobody.
"""

from __future__ import annotations

import json
import time
from typing import Any

import redis

from edge.bus.messages import AccessEvent
from edge.store import keys
from edge.store.redis_store import Store


class Audit:
    def __init__(self, store: Store, retention_days: float):
        self.store = store
        self.retention = retention_days * 86400

    def record(self, event: AccessEvent) -> None:
        ref = keys.audit_pseudonym(event.subject_id) if event.subject_id else ""
        entry = {"event_id": event.event_id, "time": event.time, "device": event.device_id,
                 "decision": event.decision, "reasons": json.dumps(event.reasons), "subject": ref,
                 "score": "" if event.score is None else event.score}  # fmt: skip
        oldest = int((time.time() - self.retention) * 1000)
        try:
            with self.store.client.pipeline() as pipe:
                pipe.xadd(keys.audit(), entry)
                if ref and event.name:
                    pipe.hset(keys.audit_names(), ref, event.name)
                pipe.xtrim(
                    keys.audit(), minid=oldest, approximate=False
                )  # entries past the retention are purged on every write
                pipe.execute()
        except redis.RedisError as exc:
            raise self.store._fail(exc) from exc

    def recent(self, count: int = 50) -> list[dict[str, Any]]:
        client = self.store.client
        entries = client.xrevrange(keys.audit(), count=count)
        names = client.hgetall(keys.audit_names())
        out = []
        for _, fields in entries:
            doc = {k.decode(): v.decode() for k, v in fields.items()}
            doc["reasons"] = json.loads(doc.get("reasons", "[]"))
            name = names.get(doc["subject"].encode()) if doc.get("subject") else None
            doc["name"] = name.decode() if name else None
            out.append(doc)
        return out
