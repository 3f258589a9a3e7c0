"""The base of every benchmark's result: a typed model that prints as a report or as JSON."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class BenchResult(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    def report(self) -> str:
        raise NotImplementedError

    def to_json(self) -> str:
        return self.model_dump_json(indent=1, by_alias=True)


class BenchError(Exception):
    """A benchmark cannot run as asked (no data where it looks); the message says what to pass instead."""
