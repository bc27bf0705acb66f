"""Paillier encryption randomness computed ahead of time.

A Paillier ciphertext is (1 + n·m) · r^n mod n² (g = n + 1): all the cost is r^n mod n², a
modular exponentiation that does not depend on the message. A client knows how many
ciphertexts its update needs as soon as a round starts, so it computes the r^n values in
background processes while local training runs; encrypting the update is then one
multiplication per ciphertext. Every value is used once.
"""

from __future__ import annotations

import multiprocessing
import secrets
import threading
from collections.abc import Sequence

import gmpy2
from phe.paillier import PaillierPublicKey

# Work items per process: smaller chunks even out the load between processes.
_CHUNKS_PER_PROCESS = 4


def _random_unit(n: int) -> int:
    """Uniform r in [1, n) coprime to n (a non-unit would reveal a factor of n)."""
    while True:
        r = secrets.randbelow(n - 1) + 1
        if gmpy2.gcd(r, n) == 1:
            return r


def _powers(task: tuple[int, int]) -> list[int]:
    # Module level and given plain ints so that a spawned process can run it.
    n, count = task
    nsquare = gmpy2.mpz(n) * n
    return [int(gmpy2.powmod(_random_unit(n), n, nsquare)) for _ in range(count)]


def compute_randomness(
    public_key: PaillierPublicKey, count: int, processes: int = 1, spawn: bool | None = None
) -> list[int]:
    """`count` fresh values r^n mod n², in `processes` spawned processes (by default when
    above 1; `spawn=True` keeps the work out of the calling process even with one)."""
    if count < 0 or processes < 1:
        raise ValueError(f"need count >= 0 and processes >= 1, got {count} and {processes}")
    n = int(public_key.n)
    if not (processes > 1 if spawn is None else spawn) or count < processes:
        return _powers((n, count))
    parts = processes * _CHUNKS_PER_PROCESS
    sizes = [count // parts + (1 if i < count % parts else 0) for i in range(parts)]
    # Spawn, not fork: the client agent runs gRPC threads, which fork does not survive.
    with multiprocessing.get_context("spawn").Pool(processes) as pool:
        chunks = pool.map(_powers, [(n, size) for size in sizes])
    return [value for chunk in chunks for value in chunk]


class PrecomputedRandomness:
    """r^n values being computed in the background; `take` waits for them. Each value is
    handed out once; asking for more than was computed computes the rest on the spot."""

    def __init__(self, public_key: PaillierPublicKey, count: int, processes: int = 1) -> None:
        self.public_key = public_key
        self.count = count
        self._values: list[int] = []
        self._error: BaseException | None = None
        self._thread = threading.Thread(
            target=self._compute, args=(processes,), name="paillier-randomness", daemon=True
        )
        self._thread.start()

    def _compute(self, processes: int) -> None:
        try:
            # In other processes: the caller goes on training, undisturbed by this thread.
            self._values = compute_randomness(self.public_key, self.count, processes, spawn=True)
        except BaseException as error:  # re-raised in take()
            self._error = error

    def take(self, count: int) -> list[int]:
        self._thread.join()
        if self._error is not None:
            raise RuntimeError("computing Paillier randomness failed") from self._error
        taken, self._values = self._values[:count], self._values[count:]
        if len(taken) < count:
            taken += compute_randomness(self.public_key, count - len(taken))
        return taken


def encrypt_with(
    plaintexts: Sequence[int], public_key: PaillierPublicKey, randomness: Sequence[int]
) -> list[int]:
    """(1 + n·m) · r^n mod n² for each plaintext m, with one precomputed r^n each."""
    if len(randomness) != len(plaintexts):
        raise ValueError(
            f"{len(plaintexts)} plaintexts need as many r^n values, got {len(randomness)}"
        )
    n = gmpy2.mpz(public_key.n)
    nsquare = n * n
    return [
        int((1 + n * plaintext) * obfuscator % nsquare)
        for plaintext, obfuscator in zip(plaintexts, randomness, strict=True)
    ]
