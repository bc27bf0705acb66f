"""How much each site contributed: Shapley values of a utility over coalitions of sites, exact
(every coalition, for a handful of sites) or estimated by guided, truncated permutation
sampling (GTG-Shapley, Liu et al. 2022), and leave-one-out.

A coalition's utility is what the platform can measure: the job's primary metric for the
model the coalition's updates make (the round's FedAvg over the coalition's members, from the
same starting model; the empty coalition keeps the starting model). Per-site contributions
need each site's update: under secure aggregation or Paillier only the sum exists, and they
are not computable.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from functools import cache

import numpy as np

Utility = Callable[[frozenset[str]], float]


def exact_shapley(players: Sequence[str], utility: Utility) -> dict[str, float]:
    """phi_i = sum over S without i of |S|! (n - |S| - 1)! / n! * (v(S + i) - v(S)): every one
    of the 2^n coalitions is valued once."""
    value = cache(utility)
    count = len(players)
    out = {}
    for player in players:
        others = [p for p in players if p != player]
        total = 0.0
        for size in range(count):
            weight = math.factorial(size) * math.factorial(count - size - 1) / math.factorial(count)
            for members in itertools.combinations(others, size):
                coalition = frozenset(members)
                total += weight * (value(coalition | {player}) - value(coalition))
        out[player] = total
    return out


def permutation_shapley(
    players: Sequence[str],
    utility: Utility,
    permutations: int,
    seed: int = 0,
    truncation: float = 0.0,
) -> dict[str, float]:
    """The mean marginal contribution over sampled orders of the players. Guided as GTG's:
    the orders start from each player in turn, so every site leads as often. Truncated: once
    a prefix's value is within `truncation` of the grand coalition's, the later players'
    marginals count as 0 (their utility calls are saved). Without truncation every order's
    marginals add up to v(all) - v(none), so the estimate is exactly efficient."""
    if permutations < 1:
        raise ValueError(f"permutations must be at least 1, got {permutations}")
    value = cache(utility)
    rng = np.random.default_rng(seed)
    grand = value(frozenset(players))
    totals = dict.fromkeys(players, 0.0)
    for index in range(permutations):
        first = players[index % len(players)]
        rest = [p for p in players if p != first]
        order = [first, *(rest[i] for i in rng.permutation(len(rest)))]
        coalition: frozenset[str] = frozenset()
        before = value(coalition)
        for player in order:
            if truncation > 0 and abs(grand - before) < truncation:
                break
            coalition = coalition | {player}
            after = value(coalition)
            totals[player] += after - before
            before = after
    return {player: total / permutations for player, total in totals.items()}


def leave_one_out(players: Sequence[str], utility: Utility) -> dict[str, float]:
    """v(all) - v(all but i): what the federation loses without each site."""
    everyone = frozenset(players)
    grand = utility(everyone)
    return {player: grand - utility(everyone - {player}) for player in players}
