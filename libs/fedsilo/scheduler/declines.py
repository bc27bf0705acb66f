"""What the sites said no to in a round, and whether the round can still reach quorum.

A site declines a task with a reason. A refusal (its policy, its data, its configuration) will
be the same if asked again: the round stops waiting for that site at once, later attempts of
the round do not select it, and when too few other sites remain the job fails with the
reasons, instead of waiting for deadlines and retrying what cannot succeed. A transient decline
(something failed at the site) only ends that site's part in the current attempt.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Decline:
    client_id: str
    site: str
    reason: str
    transient: bool
    attempt: int

    def reason_without_site(self) -> str:
        return bare_reason(self.reason, self.site)


def bare_reason(reason: str, site: str) -> str:
    """Agents prefix reasons with their site; grouping and tables want the bare reason."""
    prefix = f"{site}: "
    return reason[len(prefix) :] if reason.startswith(prefix) else reason


@dataclass
class RoundDeclines:
    """The declines of one round, across its attempts."""

    by_client: dict[str, Decline] = field(default_factory=dict)

    def record(self, decline: Decline) -> None:
        # A refusal stands for the whole round; a later transient failure does not undo it.
        previous = self.by_client.get(decline.client_id)
        if previous is None or previous.transient or not decline.transient:
            self.by_client[decline.client_id] = decline

    def refused(self) -> set[str]:
        """Clients that refused: not selected again in this round."""
        return {c for c, d in self.by_client.items() if not d.transient}

    def in_attempt(self, attempt: int) -> set[str]:
        return {c for c, d in self.by_client.items() if d.attempt == attempt or not d.transient}

    def clear(self) -> None:
        self.by_client.clear()


def quorum_out_of_reach(selected: Iterable[str], declined: set[str], quorum: int) -> bool:
    """True when even if every selected site that has not declined answers, the round
    still has fewer than `quorum` of them."""
    return len(set(selected) - declined) < quorum


def no_quorum_reason(
    round_: int,
    declines: Iterable[Decline],
    asked: int,
    quorum: int,
) -> str:
    """'no quorum in round 1: 4 of 4 sites declined (quorum 2): a, b: <reason>; c: <other>'"""
    declines = sorted(declines, key=lambda d: d.site)
    grouped: dict[str, list[str]] = {}
    for decline in declines:
        grouped.setdefault(decline.reason_without_site(), []).append(decline.site)
    detail = "; ".join(f"{', '.join(sites)}: {reason}" for reason, sites in grouped.items())
    return (
        f"no quorum in round {round_}: {len(declines)} of {asked} sites declined "
        f"(quorum {quorum}): {detail}"
    )


def latest_declines(
    events: Iterable[Mapping[str, object]], round_: int, sites: Mapping[str, str]
) -> list[dict[str, object]]:
    """The current round's declines for job status: each site's latest reason."""
    latest: dict[str, dict[str, object]] = {}
    for event in events:
        kind = str(event["kind"])
        if event["round"] != round_ or kind not in ("declined", "declined:transient"):
            continue
        client_id = str(event["client_id"])
        site = sites.get(client_id, client_id)
        latest[client_id] = {
            "client_id": client_id,
            "site": site,
            "reason": bare_reason(str(event["detail"]), site),
            "transient": kind == "declined:transient",
            "at": event["at"],
        }
    return sorted(latest.values(), key=lambda d: str(d["site"]))
