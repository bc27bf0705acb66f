from __future__ import annotations

import pytest

from fedsilo.secagg import ClientKeys, agree, agreement_context


def test_both_ends_derive_the_same_seed() -> None:
    alice, bob = ClientKeys.generate(), ClientKeys.generate()
    assert len(alice.mask_public) == len(alice.share_public) == 32
    assert alice.mask_public != alice.share_public

    at_alice = agree(
        alice.mask_private, bob.mask_public, agreement_context("mask", "j", 1, "a", "b")
    )
    at_bob = agree(bob.mask_private, alice.mask_public, agreement_context("mask", "j", 1, "b", "a"))

    assert at_alice == at_bob
    assert len(at_alice) == 32


def test_the_context_binds_purpose_job_round_and_pair() -> None:
    alice, bob = ClientKeys.generate(), ClientKeys.generate()
    contexts = [
        agreement_context("mask", "job", 1, "a", "b"),
        agreement_context("share", "job", 1, "a", "b"),
        agreement_context("mask", "job2", 1, "a", "b"),
        agreement_context("mask", "job", 2, "a", "b"),
        agreement_context("mask", "job", 1, "a", "c"),
    ]
    seeds = {agree(alice.mask_private, bob.mask_public, context) for context in contexts}
    assert len(seeds) == len(contexts)


def test_length_prefixes_keep_id_boundaries_apart() -> None:
    assert agreement_context("mask", "j", 0, "a", "bc") != agreement_context(
        "mask", "j", 0, "ab", "c"
    )


@pytest.mark.parametrize(
    ("round_", "id_b", "message"), [(1, "a", "distinct client ids"), (-1, "b", "round_")]
)
def test_invalid_contexts_are_named(round_: int, id_b: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        agreement_context("mask", "j", round_, "a", id_b)


def test_a_malformed_public_key_is_refused() -> None:
    with pytest.raises(ValueError, match="their_public must be 32"):
        agree(ClientKeys.generate().mask_private, b"short", b"ctx")
