from __future__ import annotations

from typing import Any

import gmpy2
import numpy as np
import pytest
from phe import paillier

from fedsilo.paillier import (
    PackingSpec,
    PrecomputedRandomness,
    compute_randomness,
    decrypt_sum,
    encrypt_update,
    encrypt_with,
    multiply_range,
)

KEY_BITS = 512
SPEC = PackingSpec(key_bits=KEY_BITS, num_clients=3, clip=1.0)


@pytest.fixture(scope="module")
def keys() -> tuple[Any, Any]:
    return paillier.generate_paillier_keypair(n_length=KEY_BITS)


def test_precomputed_values_are_nth_powers_of_units(keys: tuple[Any, Any]) -> None:
    public_key, private_key = keys
    values = compute_randomness(public_key, 20)

    assert len(set(values)) == 20, "each r^n is fresh"
    for value in values:
        assert 0 < value < public_key.nsquare
        # r^n is an encryption of zero: it decrypts to 0 and is a unit mod n^2.
        assert private_key.raw_decrypt(value) == 0
        assert gmpy2.gcd(value, public_key.n) == 1


def test_encrypt_with_matches_the_library_decryption(keys: tuple[Any, Any]) -> None:
    public_key, private_key = keys
    plaintexts = [0, 1, 12345, public_key.n - 1]
    ciphertexts = encrypt_with(plaintexts, public_key, compute_randomness(public_key, 4))
    assert [private_key.raw_decrypt(c) for c in ciphertexts] == plaintexts
    with pytest.raises(ValueError, match="need as many"):
        encrypt_with(plaintexts, public_key, compute_randomness(public_key, 3))


def test_updates_encrypted_with_precomputed_randomness_sum_correctly(
    keys: tuple[Any, Any],
) -> None:
    public_key, private_key = keys
    updates = np.random.default_rng(5).uniform(-1, 1, size=(3, 400))
    count = SPEC.num_ciphertexts(400)
    uploads = []
    for update in updates:
        randomness = PrecomputedRandomness(public_key, count)
        uploads.append(encrypt_update(update, SPEC, public_key, randomness=randomness))

    aggregate = multiply_range(uploads, public_key, 0, count)
    summed = decrypt_sum(aggregate, private_key, SPEC, 400, count=3)

    np.testing.assert_allclose(summed, updates.sum(axis=0), atol=3 / SPEC.scale + 1e-6)


def test_taking_more_than_was_precomputed_computes_the_rest_and_never_reuses(
    keys: tuple[Any, Any],
) -> None:
    public_key, _ = keys
    randomness = PrecomputedRandomness(public_key, 3)
    first, second = randomness.take(2), randomness.take(4)
    assert len(first) == 2 and len(second) == 4
    assert not set(first) & set(second)


def test_randomness_for_another_key_is_refused(keys: tuple[Any, Any]) -> None:
    public_key, _ = keys
    other, _ = paillier.generate_paillier_keypair(n_length=KEY_BITS)
    with pytest.raises(ValueError, match="another public key"):
        encrypt_update(np.zeros(10), SPEC, public_key, randomness=PrecomputedRandomness(other, 2))


def test_spawned_processes_compute_the_same_kind_of_values(keys: tuple[Any, Any]) -> None:
    public_key, private_key = keys
    values = compute_randomness(public_key, 40, processes=2)
    assert len(set(values)) == 40
    assert all(private_key.raw_decrypt(value) == 0 for value in values)
