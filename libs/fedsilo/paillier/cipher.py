"""Paillier encryption of packed updates, homomorphic summation and checked decryption.

An upload is fixed-width big-endian ciphertexts: index 0 encrypts CANARY, the rest the
packed plaintexts of the update. Multiplying the i-th ciphertexts of several uploads mod n^2
adds their plaintexts, so the aggregator sums updates it cannot read; the summed canary
tells the keymanager how many uploads under its key the aggregate holds.
"""

from __future__ import annotations

import multiprocessing
import random
from collections.abc import Mapping, Sequence

import gmpy2
import numpy as np
from numpy.typing import NDArray
from phe.paillier import PaillierPrivateKey, PaillierPublicKey

from fedsilo.paillier.packing import PackingSpec, dequantize_sum, pack, quantize, unpack
from fedsilo.paillier.randomness import PrecomputedRandomness, compute_randomness, encrypt_with

CANARY = 1
# Work items per process: smaller chunks even out the load between processes.
_CHUNKS_PER_PROCESS = 4
# About a second of decryption: below that, starting a process costs more than it saves.
_MIN_DECRYPTIONS_PER_PROCESS = 400


def ciphertext_bytes(public_key: PaillierPublicKey) -> int:
    """Width of one serialized ciphertext under `public_key`: the bytes of n^2."""
    return (int(public_key.nsquare).bit_length() + 7) // 8


def serialize_ciphertexts(values: Sequence[int], public_key: PaillierPublicKey) -> bytes:
    """Concatenated fixed-width big-endian ciphertexts."""
    width = ciphertext_bytes(public_key)
    return b"".join(int(value).to_bytes(width, "big") for value in values)


def parse_ciphertexts(data: bytes, public_key: PaillierPublicKey) -> list[gmpy2.mpz]:
    """The ciphertexts in `data`; ValueError unless each is in [1, n^2)."""
    width = ciphertext_bytes(public_key)
    if len(data) % width:
        raise ValueError(
            f"ciphertext data of {len(data)} bytes is not a multiple of this key's "
            f"{width}-byte ciphertext width"
        )
    nsquare = gmpy2.mpz(public_key.nsquare)
    view = memoryview(data)
    values = []
    for index in range(len(data) // width):
        value = gmpy2.mpz(int.from_bytes(view[index * width : (index + 1) * width], "big"))
        if not 0 < value < nsquare:
            raise ValueError(
                f"ciphertext {index} is not a ciphertext under this key: "
                f"{'zero' if value == 0 else 'not below n^2'}"
            )
        values.append(value)
    return values


def _check_key_fits(spec: PackingSpec, public_key: PaillierPublicKey) -> None:
    modulus_bits = int(public_key.n).bit_length()
    if spec.key_bits > modulus_bits:
        raise ValueError(
            f"spec.key_bits={spec.key_bits} exceeds the {modulus_bits}-bit modulus of the "
            "public key: packed plaintexts would not stay below n"
        )


def _split(items: list[int], processes: int) -> list[list[int]]:
    size = max(1, -(-len(items) // (processes * _CHUNKS_PER_PROCESS)))
    return [items[start : start + size] for start in range(0, len(items), size)]


def _encrypt_chunk(task: tuple[int, list[int]]) -> bytes:
    # Module level and given plain ints so that a spawned process can run it.
    n, plaintexts = task
    public_key = PaillierPublicKey(n)
    randomness = compute_randomness(public_key, len(plaintexts))
    return serialize_ciphertexts(encrypt_with(plaintexts, public_key, randomness), public_key)


def _decrypt_chunk(task: tuple[int, int, int, list[int]]) -> list[int]:
    n, p, q, ciphertexts = task
    private_key = PaillierPrivateKey(PaillierPublicKey(n), p, q)
    return [int(private_key.raw_decrypt(c)) for c in ciphertexts]


def _pool_map_encrypt(n: int, plaintexts: list[int], processes: int) -> bytes:
    # Spawn, not fork: the client agent runs gRPC threads, which fork does not survive.
    with multiprocessing.get_context("spawn").Pool(processes) as pool:
        parts = pool.map(_encrypt_chunk, [(n, chunk) for chunk in _split(plaintexts, processes)])
    return b"".join(parts)


def encrypt_update(
    values: NDArray[np.floating],
    spec: PackingSpec,
    public_key: PaillierPublicKey,
    rng: np.random.Generator | None = None,
    processes: int = 1,
    randomness: PrecomputedRandomness | None = None,
) -> bytes:
    """Quantize, pack and encrypt `values` (flattened); the upload starts with Enc(CANARY).

    With `randomness` (r^n values computed while the client trained) encryption is one
    multiplication per ciphertext. Otherwise processes > 1 encrypts in that many spawned
    processes; callers that are scripts need the usual `if __name__ == "__main__":` guard.
    """
    if processes < 1:
        raise ValueError(f"processes must be at least 1, got {processes}")
    _check_key_fits(spec, public_key)
    plaintexts = [CANARY, *pack(quantize(values, spec, rng), spec)]
    if randomness is not None:
        if int(randomness.public_key.n) != int(public_key.n):
            raise ValueError("the precomputed randomness is for another public key")
        obfuscators = randomness.take(len(plaintexts))
        return serialize_ciphertexts(encrypt_with(plaintexts, public_key, obfuscators), public_key)
    n = int(public_key.n)
    processes = min(processes, len(plaintexts))
    if processes == 1:
        return _encrypt_chunk((n, plaintexts))
    return _pool_map_encrypt(n, plaintexts, processes)


def multiply_range(
    uploads: Sequence[bytes], public_key: PaillierPublicKey, begin: int, end: int
) -> bytes:
    """The ciphertext-wise product mod n^2 of `uploads`, each the slice [begin, end) of one.

    The caller passes data[begin * width : end * width] of every upload; the result is
    ciphertexts [begin, end) of the aggregate, whose plaintexts are the sums.
    """
    if not 0 <= begin <= end:
        raise ValueError(f"range [{begin}, {end}) is not a valid ciphertext range")
    if not uploads:
        raise ValueError("no uploads to multiply")
    width = ciphertext_bytes(public_key)
    expected = (end - begin) * width
    for index, upload in enumerate(uploads):
        if len(upload) != expected:
            raise ValueError(
                f"upload {index} slice is {len(upload)} bytes; ciphertexts [{begin}, {end}) "
                f"take {expected} bytes of {width} each"
            )
    nsquare = gmpy2.mpz(public_key.nsquare)
    product = parse_ciphertexts(uploads[0], public_key)
    for upload in uploads[1:]:
        for position, value in enumerate(parse_ciphertexts(upload, public_key)):
            product[position] = product[position] * value % nsquare
    return serialize_ciphertexts(product, public_key)


def _ciphertext_at(data: bytes, position: int, width: int, nsquare: gmpy2.mpz) -> gmpy2.mpz:
    value = gmpy2.mpz(int.from_bytes(data[position * width : (position + 1) * width], "big"))
    if not 0 < value < nsquare:
        raise ValueError(f"ciphertext {position} is not a ciphertext under this key")
    return value


def verify_sample(
    aggregate: bytes,
    uploads: Sequence[bytes],
    public_key: PaillierPublicKey,
    sample: int,
    rng: random.Random,
) -> bool:
    """Whether `aggregate` is the product of exactly `uploads` at `sample` random positions.

    Uploads and aggregate are full serialized ciphertext lists. A left-out, extra or
    substituted upload changes every position of the product, so one position already
    catches it; more positions catch an aggregate that is wrong only in places.
    """
    if sample < 1:
        raise ValueError(f"sample must be at least 1, got {sample}")
    if not uploads:
        raise ValueError("no uploads to verify the aggregate against")
    width = ciphertext_bytes(public_key)
    if not aggregate or len(aggregate) % width:
        return False
    if any(len(upload) != len(aggregate) for upload in uploads):
        return False
    nsquare = gmpy2.mpz(public_key.nsquare)
    total = len(aggregate) // width
    for position in rng.sample(range(total), min(sample, total)):
        product = gmpy2.mpz(1)
        for upload in uploads:
            product = product * _ciphertext_at(upload, position, width, nsquare) % nsquare
        if product != int.from_bytes(aggregate[position * width : (position + 1) * width], "big"):
            return False
    return True


def decrypt_sum(
    aggregate: bytes,
    private_key: PaillierPrivateKey,
    spec: PackingSpec,
    num_values: int,
    count: int,
    processes: int = 1,
) -> NDArray[np.float32]:
    """The float sum of `count` clients' updates from their aggregate.

    ValueError when the canary does not decrypt to count * CANARY: an upload under another
    key, a wrong key here, or an aggregate of a different number of uploads.
    """
    if processes < 1:
        raise ValueError(f"processes must be at least 1, got {processes}")
    _check_key_fits(spec, private_key.public_key)
    ciphertexts = parse_ciphertexts(aggregate, private_key.public_key)
    expected = spec.num_ciphertexts(num_values)
    if len(ciphertexts) != expected:
        raise ValueError(
            f"aggregate holds {len(ciphertexts)} ciphertexts; {num_values} values take {expected}"
        )
    canary = int(private_key.raw_decrypt(int(ciphertexts[0])))
    if canary != count * CANARY:
        raise ValueError(
            f"aggregate does not decrypt under the job's key as a sum of {count} uploads: "
            f"the canary decrypts to {canary if canary <= spec.num_clients else 'garbage'}, "
            f"expected {count * CANARY}; an upload was encrypted under another key or the "
            "count is wrong"
        )
    data = [int(c) for c in ciphertexts[1:]]
    processes = min(processes, max(1, len(data) // _MIN_DECRYPTIONS_PER_PROCESS))
    key_parts = (int(private_key.public_key.n), int(private_key.p), int(private_key.q))
    if processes == 1:
        plaintexts = _decrypt_chunk((*key_parts, data))
    else:
        with multiprocessing.get_context("spawn").Pool(processes) as pool:
            parts = pool.map(
                _decrypt_chunk, [(*key_parts, chunk) for chunk in _split(data, processes)]
            )
        plaintexts = [p for part in parts for p in part]
    return dequantize_sum(unpack(plaintexts, spec, num_values), spec, count)


def canary_ok(upload: bytes, private_key: PaillierPrivateKey) -> bool:
    """Whether ciphertext 0 of `upload` decrypts to CANARY under `private_key`.

    Decrypts nothing else, so it reveals nothing about the update.
    """
    public_key = private_key.public_key
    width = ciphertext_bytes(public_key)
    if len(upload) < width or len(upload) % width:
        return False
    value = int.from_bytes(upload[:width], "big")
    if not 0 < value < int(public_key.nsquare):
        return False
    return bool(private_key.raw_decrypt(value) == CANARY)


def private_key_to_dict(private_key: PaillierPrivateKey) -> dict[str, str]:
    """n, p and q as decimal strings, for JSON."""
    return {
        "n": str(int(private_key.public_key.n)),
        "p": str(int(private_key.p)),
        "q": str(int(private_key.q)),
    }


def _decimal(data: Mapping[str, object], name: str) -> int:
    text = data.get(name)
    if not isinstance(text, str) or not text.isdecimal():
        raise ValueError(f"private key field {name!r} must be a decimal string, got {text!r}")
    return int(text)


def private_key_from_dict(data: Mapping[str, object]) -> PaillierPrivateKey:
    """The private key saved by private_key_to_dict; ValueError when p * q != n."""
    n, p, q = (_decimal(data, name) for name in ("n", "p", "q"))
    if p * q != n:
        raise ValueError("private key fields do not match: p * q != n")
    return PaillierPrivateKey(PaillierPublicKey(n), p, q)


def public_key_to_bytes(public_key: PaillierPublicKey) -> bytes:
    """n as minimal big-endian bytes."""
    n = int(public_key.n)
    return n.to_bytes((n.bit_length() + 7) // 8, "big")


def public_key_from_bytes(data: bytes) -> PaillierPublicKey:
    """The public key saved by public_key_to_bytes."""
    n = int.from_bytes(data, "big")
    if n < 3 or n % 2 == 0:
        raise ValueError(
            f"{len(data)} bytes do not hold a Paillier modulus (an odd n of two primes)"
        )
    return PaillierPublicKey(n)
