from __future__ import annotations

import json
import random
from typing import Any

import numpy as np
import pytest
from numpy.typing import NDArray
from phe import paillier

from fedsilo.paillier import (
    CANARY,
    PackingSpec,
    canary_ok,
    ciphertext_bytes,
    decrypt_sum,
    encrypt_update,
    multiply_range,
    parse_ciphertexts,
    private_key_from_dict,
    private_key_to_dict,
    public_key_from_bytes,
    public_key_to_bytes,
    serialize_ciphertexts,
    verify_sample,
)

KEY_BITS = 512
NUM_VALUES = 500
SPEC = PackingSpec(key_bits=KEY_BITS, num_clients=5, clip=1.0)


@pytest.fixture(scope="module")
def keys() -> tuple[Any, Any, Any, Any]:
    """The job's key pair and another, whose n is smaller so its ciphertexts parse here."""
    first = paillier.generate_paillier_keypair(n_length=KEY_BITS)
    second = paillier.generate_paillier_keypair(n_length=KEY_BITS)
    job, other = sorted([first, second], key=lambda pair: pair[0].n, reverse=True)
    return job[0], job[1], other[0], other[1]


@pytest.fixture(scope="module")
def updates() -> NDArray[np.float64]:
    return np.random.default_rng(0).uniform(-1.0, 1.0, size=(5, NUM_VALUES))


@pytest.fixture(scope="module")
def uploads(keys: tuple[Any, Any, Any, Any], updates: NDArray[np.float64]) -> list[bytes]:
    public_key = keys[0]
    rng = np.random.default_rng(1)
    return [encrypt_update(update, SPEC, public_key, rng) for update in updates]


def _aggregate(uploads: list[bytes], public_key: Any) -> bytes:
    return multiply_range(uploads, public_key, 0, SPEC.num_ciphertexts(NUM_VALUES))


def test_an_upload_is_fixed_width_ciphertexts_led_by_the_canary(
    keys: tuple[Any, Any, Any, Any], uploads: list[bytes]
) -> None:
    public_key, private_key, _, _ = keys
    width = ciphertext_bytes(public_key)
    assert width == (public_key.nsquare.bit_length() + 7) // 8
    assert len(uploads[0]) == SPEC.num_ciphertexts(NUM_VALUES) * width
    first = int(parse_ciphertexts(uploads[0], public_key)[0])
    assert private_key.raw_decrypt(first) == CANARY


def test_the_sum_over_two_ranges_decrypts_to_the_plaintext_sum(
    keys: tuple[Any, Any, Any, Any], uploads: list[bytes], updates: NDArray[np.float64]
) -> None:
    public_key, private_key, _, _ = keys
    width = ciphertext_bytes(public_key)
    total = SPEC.num_ciphertexts(NUM_VALUES)
    split = total // 2

    aggregate = multiply_range(
        [upload[: split * width] for upload in uploads], public_key, 0, split
    ) + multiply_range([upload[split * width :] for upload in uploads], public_key, split, total)
    summed = decrypt_sum(aggregate, private_key, SPEC, NUM_VALUES, count=5)

    assert summed.dtype == np.float32
    assert summed.shape == (NUM_VALUES,)
    np.testing.assert_allclose(summed, updates.sum(axis=0), rtol=0, atol=5 / SPEC.scale + 1e-6)


def test_verify_sample_accepts_exactly_the_uploads_of_the_aggregate(
    keys: tuple[Any, Any, Any, Any], uploads: list[bytes], updates: NDArray[np.float64]
) -> None:
    public_key = keys[0]
    aggregate = _aggregate(uploads, public_key)
    # Same values, fresh randomness: a different ciphertext of the same update.
    replacement = encrypt_update(updates[2], SPEC, public_key)

    assert verify_sample(aggregate, uploads, public_key, 3, random.Random(0))
    assert not verify_sample(aggregate, uploads[:4], public_key, 3, random.Random(0))
    assert not verify_sample(
        aggregate, [*uploads[:2], replacement, *uploads[3:]], public_key, 3, random.Random(0)
    )
    assert not verify_sample(aggregate, [*uploads, uploads[0]], public_key, 3, random.Random(0))
    assert not verify_sample(aggregate[:-1], uploads, public_key, 3, random.Random(0))


def test_decrypt_sum_refuses_an_aggregate_with_an_upload_under_another_key(
    keys: tuple[Any, Any, Any, Any], uploads: list[bytes], updates: NDArray[np.float64]
) -> None:
    public_key, private_key, other_public_key, _ = keys
    foreign = encrypt_update(updates[4], SPEC, other_public_key)
    aggregate = _aggregate([*uploads[:4], foreign], public_key)

    with pytest.raises(ValueError, match="aggregate does not decrypt under the job's key"):
        decrypt_sum(aggregate, private_key, SPEC, NUM_VALUES, count=5)


def test_decrypt_sum_refuses_a_wrong_count(
    keys: tuple[Any, Any, Any, Any], uploads: list[bytes]
) -> None:
    public_key, private_key, _, _ = keys
    aggregate = _aggregate(uploads, public_key)
    with pytest.raises(ValueError, match="canary decrypts to 5, expected 4"):
        decrypt_sum(aggregate, private_key, SPEC, NUM_VALUES, count=4)
    held, wanted = SPEC.num_ciphertexts(NUM_VALUES), SPEC.num_ciphertexts(NUM_VALUES + 100)
    with pytest.raises(ValueError, match=f"holds {held} ciphertexts; 600 values take {wanted}"):
        decrypt_sum(aggregate, private_key, SPEC, NUM_VALUES + 100, count=5)


def test_canary_ok_tells_the_job_key_and_the_protocol_canary(
    keys: tuple[Any, Any, Any, Any], uploads: list[bytes], updates: NDArray[np.float64]
) -> None:
    public_key, private_key, other_public_key, _ = keys
    width = ciphertext_bytes(public_key)
    wrong_canary = (
        serialize_ciphertexts([public_key.raw_encrypt(2)], public_key) + uploads[0][width:]
    )

    assert canary_ok(uploads[0], private_key)
    assert not canary_ok(encrypt_update(updates[0], SPEC, other_public_key), private_key)
    assert not canary_ok(wrong_canary, private_key)
    assert not canary_ok(uploads[0][:-1], private_key)
    assert not canary_ok(b"", private_key)


def test_parse_ciphertexts_refuses_bad_lengths_and_values(
    keys: tuple[Any, Any, Any, Any], uploads: list[bytes]
) -> None:
    public_key = keys[0]
    width = ciphertext_bytes(public_key)
    head = uploads[0][:width]

    assert (
        serialize_ciphertexts(parse_ciphertexts(uploads[0], public_key), public_key) == (uploads[0])
    )
    with pytest.raises(ValueError, match="not a multiple of this key's"):
        parse_ciphertexts(uploads[0][:-3], public_key)
    with pytest.raises(ValueError, match="ciphertext 1 is not a ciphertext under this key: zero"):
        parse_ciphertexts(head + bytes(width), public_key)
    too_big = public_key.nsquare.to_bytes(width, "big")
    with pytest.raises(ValueError, match="ciphertext 1 is not a ciphertext under this key: not"):
        parse_ciphertexts(head + too_big, public_key)


def test_multiply_range_refuses_slices_of_the_wrong_length(
    keys: tuple[Any, Any, Any, Any], uploads: list[bytes]
) -> None:
    public_key = keys[0]
    with pytest.raises(ValueError, match=r"upload 0 slice is .* ciphertexts \[1, 3\)"):
        multiply_range(uploads, public_key, 1, 3)


def test_encrypt_refuses_a_spec_for_a_bigger_key(keys: tuple[Any, Any, Any, Any]) -> None:
    spec = PackingSpec(key_bits=2 * KEY_BITS, num_clients=5, clip=1.0)
    with pytest.raises(ValueError, match="exceeds the 512-bit modulus"):
        encrypt_update(np.zeros(3), spec, keys[0])


def test_keys_survive_persistence(keys: tuple[Any, Any, Any, Any], uploads: list[bytes]) -> None:
    public_key, private_key, _, _ = keys

    restored_private = private_key_from_dict(
        json.loads(json.dumps(private_key_to_dict(private_key)))
    )
    restored_public = public_key_from_bytes(public_key_to_bytes(public_key))

    assert restored_public == public_key
    assert restored_private.public_key == public_key
    assert canary_ok(uploads[0], restored_private)
    saved = private_key_to_dict(private_key)
    with pytest.raises(ValueError, match="p \\* q != n"):
        private_key_from_dict({**saved, "q": str(int(saved["q"]) + 2)})
    with pytest.raises(ValueError, match="'p' must be a decimal string"):
        private_key_from_dict({**saved, "p": 7})
    with pytest.raises(ValueError, match="Paillier modulus"):
        public_key_from_bytes(b"\x10")


def test_multiprocess_encryption_and_decryption_match_single_process(
    keys: tuple[Any, Any, Any, Any], updates: NDArray[np.float64]
) -> None:
    public_key, private_key, _, _ = keys
    single = encrypt_update(updates[0], SPEC, public_key, processes=1)
    parallel = encrypt_update(updates[0], SPEC, public_key, processes=2)

    assert len(parallel) == len(single)
    assert parallel != single  # fresh randomness per ciphertext
    expected = decrypt_sum(single, private_key, SPEC, NUM_VALUES, count=1)
    np.testing.assert_array_equal(
        decrypt_sum(parallel, private_key, SPEC, NUM_VALUES, count=1), expected
    )
    np.testing.assert_array_equal(
        decrypt_sum(parallel, private_key, SPEC, NUM_VALUES, count=1, processes=2), expected
    )
