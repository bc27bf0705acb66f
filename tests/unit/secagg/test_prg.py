from __future__ import annotations

import numpy as np
import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

from fedsilo.secagg import SEED_BYTES, expand_mask
from fedsilo.secagg.prg import MAX_COORDINATES

SEED = bytes(range(SEED_BYTES))


def test_coordinate_i_is_keystream_bytes_4i_little_endian() -> None:
    keystream = (
        Cipher(algorithms.ChaCha20(SEED, bytes(16)), mode=None).encryptor().update(bytes(4 * 40))
    )
    np.testing.assert_array_equal(
        expand_mask(SEED, 0, 40), np.frombuffer(keystream, dtype="<u4").astype(np.uint32)
    )


# 300_000 coordinates span more than one 1 MiB chunk of keystream.
@pytest.mark.parametrize(
    ("begin", "end"),
    [(0, 16), (16, 48), (1, 2), (7, 100), (15, 17), (12_345, 299_999), (262_143, 262_150)],
)
def test_a_range_equals_the_slice_of_the_whole_stream(begin: int, end: int) -> None:
    whole = expand_mask(SEED, 0, 300_000)
    np.testing.assert_array_equal(expand_mask(SEED, begin, end), whole[begin:end])


def test_expands_into_a_given_buffer() -> None:
    out = np.zeros(50, np.uint32)
    result = expand_mask(SEED, 3, 53, out=out)
    assert result is out
    np.testing.assert_array_equal(out, expand_mask(SEED, 0, 53)[3:])


def test_an_empty_range_is_empty() -> None:
    assert expand_mask(SEED, 10, 10).shape == (0,)


def test_distinct_seeds_give_distinct_streams() -> None:
    other = bytes(SEED_BYTES)
    assert np.count_nonzero(expand_mask(SEED, 0, 1000) == expand_mask(other, 0, 1000)) < 5


@pytest.mark.parametrize(
    ("seed", "begin", "end", "message"),
    [
        (b"short", 0, 4, "seed must be 32 bytes"),
        (SEED, 5, 4, "begin=5, end=4"),
        (SEED, -1, 4, "begin=-1"),
        (SEED, 0, MAX_COORDINATES + 1, f"end={MAX_COORDINATES + 1}"),
    ],
)
def test_invalid_arguments_are_named(seed: bytes, begin: int, end: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        expand_mask(seed, begin, end)


def test_a_mismatched_buffer_is_refused() -> None:
    with pytest.raises(ValueError, match="out must be"):
        expand_mask(SEED, 0, 10, out=np.zeros(9, np.uint32))
