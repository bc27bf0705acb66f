"""Reference federations: real data split over sites, with the job that trains them and how
their baselines are budgeted. `fedsilo demo --federation NAME` runs one end to end;
bench/tasks.py and the tests use the same definitions."""

from __future__ import annotations

from fedsilo.federations import gbsg2, heart_disease, packaged
from fedsilo.federations.base import Federation

__all__ = ["FEDERATIONS", "Federation", "federation", "gbsg2", "heart_disease", "packaged"]

FEDERATIONS: dict[str, Federation] = {
    federation.name: federation
    for federation in (heart_disease.FEDERATION, gbsg2.FEDERATION, *packaged.FEDERATIONS)
}


def federation(name: str) -> Federation:
    if name not in FEDERATIONS:
        raise KeyError(f"unknown federation '{name}'; choose {', '.join(FEDERATIONS)}")
    return FEDERATIONS[name]
