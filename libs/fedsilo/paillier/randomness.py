"""Paillier encryption randomness computed ahead of time, cheaply.

A Paillier ciphertext is (1 + n·m) · r^n mod n² (g = n + 1): all the cost is the factor r^n,
which does not depend on the message. Two things make it cheap:

- Damgard-Jurik-Nielsen randomness: r^n = h_s^a with h_s = (-x²)^n mod n² fixed per key and
  a uniform below 2^⌈k/2⌉ (k the bits of n). The exponent is half as long as n, and its base
  is fixed, so a comb table of h_s^(d·2^(8j)) turns each exponentiation into ⌈k/16⌉
  multiplications instead of a 2048-bit modular exponentiation (about 30 times faster).
- A client knows how many ciphertexts its update needs as soon as a round starts, so it
  computes the values in background processes while local training runs; encrypting the
  update is then one multiplication per ciphertext. Every value is used once.
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


_WINDOW_BITS = 8


def _random_unit(n: int) -> int:
    """Uniform r in [1, n) coprime to n (a non-unit would reveal a factor of n)."""
    while True:
        r = secrets.randbelow(n - 1) + 1
        if gmpy2.gcd(r, n) == 1:
            return r


def _comb_table(base: gmpy2.mpz, modulus: gmpy2.mpz, exponent_bits: int) -> list[list[gmpy2.mpz]]:
    """table[j][d] = base^(d · 2^(8j)) mod modulus, for every 8-bit digit d of the exponent."""
    table = []
    power = base  # base^(2^(8j))
    for _ in range(-(-exponent_bits // _WINDOW_BITS)):
        row = [gmpy2.mpz(1), power]
        for _ in range(2, 1 << _WINDOW_BITS):
            row.append(row[-1] * power % modulus)
        table.append(row)
        power = row[-1] * power % modulus
    return table


def _comb_power(table: list[list[gmpy2.mpz]], exponent: int, modulus: gmpy2.mpz) -> gmpy2.mpz:
    result = gmpy2.mpz(1)
    for row in table:
        if not exponent:
            break
        digit = exponent & ((1 << _WINDOW_BITS) - 1)
        if digit:
            result = result * row[digit] % modulus
        exponent >>= _WINDOW_BITS
    return result


# This process's comb table, for one key at a time: building it costs as much as about 250
# values, so a process builds it once and uses it for every chunk it is given.
_table: tuple[int, list[list[gmpy2.mpz]]] | None = None


def _key_table(n: int) -> list[list[gmpy2.mpz]]:
    global _table
    if _table is None or _table[0] != n:
        nsquare = gmpy2.mpz(n) * n
        x = _random_unit(n)
        fixed = gmpy2.powmod(-x * x % n, n, nsquare)  # h_s: an n-th power, so it encrypts 0
        _table = (n, _comb_table(fixed, nsquare, _exponent_bits(n)))
    return _table[1]


def _exponent_bits(n: int) -> int:
    return (n.bit_length() + 1) // 2


def _powers(task: tuple[int, int]) -> list[int]:
    # Module level and given plain ints so that a spawned process can run it.
    n, count = task
    if count == 0:
        return []
    nsquare = gmpy2.mpz(n) * n
    table, exponent_bits = _key_table(n), _exponent_bits(n)
    return [int(_comb_power(table, secrets.randbits(exponent_bits), nsquare)) for _ in range(count)]


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
