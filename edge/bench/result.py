"""The base of every benchmark's result: a typed model that prints as a report or as JSON."""

from __future__ import annotations

from collections.abc import Mapping

from pydantic import BaseModel, ConfigDict


class BenchResult(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    def report(self) -> str:
        raise NotImplementedError

    def to_json(self) -> str:
        return self.model_dump_json(indent=1, by_alias=True)


def side_by_side(summary: list[str], results: Mapping[str, BenchResult]) -> str:
    """A benchmark run once per matching profile: the summary table, then each profile's own report."""
    return "\n".join(summary) + "\n\n" + "\n\n".join(f"[{name}]\n{r.report()}" for name, r in results.items())


class BenchError(Exception):
    """A benchmark cannot run as asked (no data where it looks); the message says what to pass instead."""
