from __future__ import annotations

import numpy as np
import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from fedsilo.secagg import SEED_BYTES, MaskStream, expand_mask
from fedsilo.secagg.prg import MAX_COORDINATES, SEGMENT_BLOCKS, SEGMENT_COORDINATES

SEED = bytes(range(SEED_BYTES))


def _aes_blocks(blocks: list[int]) -> np.ndarray:
    """The definition: block j is AES-256(seed, be96(segment) || be32(offset + 2)), where
    (segment, offset) = divmod(j, SEGMENT_BLOCKS)."""
    counters = b"".join(
        (j // SEGMENT_BLOCKS).to_bytes(12, "big") + (j % SEGMENT_BLOCKS + 2).to_bytes(4, "big")
        for j in blocks
    )
    keystream = Cipher(algorithms.AES(SEED), modes.ECB()).encryptor().update(counters)
    return np.frombuffer(keystream, dtype="<u4").astype(np.uint32)


@pytest.mark.parametrize(
    "first_block", [0, 1, 37, SEGMENT_BLOCKS - 3, SEGMENT_BLOCKS, 2 * SEGMENT_BLOCKS + 5]
)
def test_coordinates_are_aes_256_of_the_segment_counter_little_endian(first_block: int) -> None:
    blocks = list(range(first_block, first_block + 6))
    np.testing.assert_array_equal(
        expand_mask(SEED, 4 * first_block, 4 * (first_block + 6)), _aes_blocks(blocks)
    )


# 2.3 million coordinates span three 1,048,576-coordinate segments.
WHOLE = 2 * SEGMENT_COORDINATES + 200_003


@pytest.mark.parametrize(
    ("begin", "end"),
    [
        (0, 4),
        (1, 2),
        (7, 100),
        (3, 5),
        (12_345, 299_999),
        (SEGMENT_COORDINATES - 1, SEGMENT_COORDINATES + 1),
        (SEGMENT_COORDINATES - 6, 2 * SEGMENT_COORDINATES + 9),
        (SEGMENT_COORDINATES, SEGMENT_COORDINATES + 50),
        (2 * SEGMENT_COORDINATES + 3, WHOLE),
    ],
)
def test_a_range_equals_the_slice_of_the_whole_stream(begin: int, end: int) -> None:
    whole = expand_mask(SEED, 0, WHOLE)
    np.testing.assert_array_equal(expand_mask(SEED, begin, end), whole[begin:end])


def test_a_stream_read_in_pieces_equals_one_read() -> None:
    begin = SEGMENT_COORDINATES - 1_001
    stream = MaskStream(SEED, begin)
    pieces = [stream.read_into(np.empty(size, np.uint32)) for size in (3, 998, 0, 5_000, 17)]
    assert stream.position == begin + 6_018
    np.testing.assert_array_equal(np.concatenate(pieces), expand_mask(SEED, begin, begin + 6_018))


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
        (bytes(16), 0, 4, "seed must be 32 bytes"),
        (SEED, 5, 4, "begin=5, end=4"),
        (SEED, -1, 4, "begin=-1"),
        (SEED, 0, MAX_COORDINATES + 1, f"end={MAX_COORDINATES + 1}"),
    ],
)
def test_invalid_arguments_are_named(seed: bytes, begin: int, end: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        expand_mask(seed, begin, end)


def test_reading_past_the_end_of_the_stream_is_refused() -> None:
    stream = MaskStream(SEED, MAX_COORDINATES - 2)
    with pytest.raises(ValueError, match="past it"):
        stream.read_into(np.empty(3, np.uint32))


def test_a_mismatched_buffer_is_refused() -> None:
    with pytest.raises(ValueError, match="out must be"):
        expand_mask(SEED, 0, 10, out=np.zeros(9, np.uint32))
