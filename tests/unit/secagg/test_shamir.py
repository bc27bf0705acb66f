from __future__ import annotations

import itertools
import os

import pytest

from fedsilo.secagg import Share, combine_shares, share_secret

SECRET = os.urandom(32)


def test_threshold_shares_recover_the_secret() -> None:
    shares = share_secret(SECRET, threshold=3, num_shares=5)
    assert [share.index for share in shares] == [1, 2, 3, 4, 5]
    assert all(len(share.value) == 32 for share in shares)
    assert combine_shares(shares[:3], threshold=3) == SECRET


def test_any_subset_of_threshold_size_recovers_the_secret() -> None:
    shares = share_secret(SECRET, threshold=3, num_shares=5)
    for subset in itertools.combinations(shares, 3):
        assert combine_shares(subset, threshold=3) == SECRET


def test_more_shares_than_the_threshold_also_work() -> None:
    shares = share_secret(SECRET, threshold=2, num_shares=4)
    assert combine_shares(shares[::-1], threshold=2) == SECRET


def test_fewer_than_threshold_shares_are_refused() -> None:
    shares = share_secret(SECRET, threshold=3, num_shares=5)
    with pytest.raises(ValueError, match="need 3 shares to recover the secret, got 2"):
        combine_shares(shares[:2], threshold=3)


def test_repeated_indexes_are_refused() -> None:
    shares = share_secret(SECRET, threshold=2, num_shares=3)
    with pytest.raises(ValueError, match=r"repeated indexes \[2\]"):
        combine_shares([shares[1], Share(2, shares[2].value)], threshold=2)


@pytest.mark.parametrize(
    ("secret", "threshold", "num_shares", "message"),
    [
        (b"x" * 16, 2, 3, "secret must be 32 bytes"),
        (SECRET, 4, 3, "threshold=4, num_shares=3"),
        (SECRET, 0, 3, "threshold=0"),
    ],
)
def test_invalid_sharing_is_named(
    secret: bytes, threshold: int, num_shares: int, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        share_secret(secret, threshold, num_shares)


def test_malformed_shares_are_refused() -> None:
    with pytest.raises(ValueError, match="index"):
        Share(0, bytes(32))
    with pytest.raises(ValueError, match="32 bytes"):
        Share(1, bytes(16))
