"""RFC 9162 proof verification: the published test vectors, a reference implementation of the
RFC's proof definitions, pymerkle, and every kind of tampering and malformed input."""

from __future__ import annotations

import hashlib
from functools import cache

import pymerkle
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from portal.evidence.verify.proofs import (
    EMPTY_ROOT,
    ProofError,
    leaf_hash,
    node_hash,
    root_from_consistency_proof,
    root_from_inclusion_proof,
    verify_consistency,
    verify_inclusion,
)

# The leaves and roots of the RFC 6962 reference tests (certificate-transparency, and
# transparency-dev/merkle's testdata), used by every CT implementation.
LEAVES = [
    bytes.fromhex(h)
    for h in [
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    ]
]
ROOTS = {
    0: "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    1: "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    2: "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    3: "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    4: "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    5: "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    6: "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    7: "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    8: "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
}
# (leaf index from 0, tree size, audit path)
INCLUSION_VECTORS = [
    (0, 1, []),
    (
        0,
        8,
        [
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        5,
        8,
        [
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (2, 3, ["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"]),
    (
        1,
        5,
        [
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
]
# (old size, new size, consistency proof)
CONSISTENCY_VECTORS = [
    (1, 1, []),
    (
        1,
        8,
        [
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        6,
        8,
        [
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (
        2,
        5,
        [
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
]


def root(size: int) -> bytes:
    return bytes.fromhex(ROOTS[size])


def hexes(values: list[str]) -> list[bytes]:
    return [bytes.fromhex(v) for v in values]


# --- The RFC's recursive definitions, written out literally ----------------------------------


def split_point(n: int) -> int:
    """The largest power of two smaller than n (RFC 9162 §2.1.1), n > 1."""
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def mth(leaves: tuple[bytes, ...]) -> bytes:
    if not leaves:
        return hashlib.sha256(b"").digest()
    if len(leaves) == 1:
        return hashlib.sha256(b"\x00" + leaves[0]).digest()
    k = split_point(len(leaves))
    return hashlib.sha256(b"\x01" + mth(leaves[:k]) + mth(leaves[k:])).digest()


def ref_path(m: int, leaves: tuple[bytes, ...]) -> list[bytes]:
    """PATH(m, D[n]), RFC 9162 §2.1.3.1."""
    n = len(leaves)
    if n == 1:
        return []
    k = split_point(n)
    if m < k:
        return [*ref_path(m, leaves[:k]), mth(leaves[k:])]
    return [*ref_path(m - k, leaves[k:]), mth(leaves[:k])]


def ref_subproof(m: int, leaves: tuple[bytes, ...], b: bool) -> list[bytes]:
    """SUBPROOF(m, D[n], b), RFC 9162 §2.1.4.1."""
    n = len(leaves)
    if m == n:
        return [] if b else [mth(leaves)]
    k = split_point(n)
    if m <= k:
        return [*ref_subproof(m, leaves[:k], b), mth(leaves[k:])]
    return [*ref_subproof(m - k, leaves[k:], False), mth(leaves[:k])]


def ref_consistency(m: int, leaves: tuple[bytes, ...]) -> list[bytes]:
    """PROOF(m, D[n]) for 0 < m < n."""
    return ref_subproof(m, leaves, True)


def path_shape(m: int, n: int) -> list[str]:
    """Which side each hash of PATH(m, D[n]) is on. The size and index of an inclusion proof
    only shape the computation, so a proof checks the same for any (m, n) of the same shape:
    the root, which a checkpoint signs together with the size, is what binds the content."""
    if n == 1:
        return []
    k = split_point(n)
    return [*path_shape(m, k), "R"] if m < k else [*path_shape(m - k, n - k), "L"]


def subproof_shape(m: int, n: int, b: bool = True) -> list[str]:
    """The same for SUBPROOF(m, D[n], b)."""
    if m == n:
        return [] if b else ["old"]
    k = split_point(n)
    if m <= k:
        return [*subproof_shape(m, k, b), "R"]
    return [*subproof_shape(m - k, n - k, False), "L"]


@cache
def tree_leaves(size: int) -> tuple[bytes, ...]:
    return tuple(f"leaf {i}".encode() for i in range(size))


def flipped(h: bytes, bit: int = 0) -> bytes:
    return bytes([h[0] ^ (1 << bit)]) + h[1:]


# --- Known answers ---------------------------------------------------------------------------


def test_hashes_are_rfc_9162() -> None:
    assert leaf_hash(b"") == root(1)
    assert node_hash(leaf_hash(b""), leaf_hash(b"\x00")) == root(2)
    assert root(0) == EMPTY_ROOT


@pytest.mark.parametrize("size", range(9))
def test_reference_roots(size: int) -> None:
    assert mth(tuple(LEAVES[:size])).hex() == ROOTS[size]


def test_pymerkle_agrees_with_the_rfc_6962_vectors() -> None:
    tree = pymerkle.InmemoryTree(algorithm="sha256")
    assert tree.get_root(0) == root(0)
    for size, data in enumerate(LEAVES, 1):
        tree.append_entry(data)
        assert tree.get_root(size) == root(size)


@pytest.mark.parametrize(("index", "size", "path"), INCLUSION_VECTORS)
def test_inclusion_vectors(index: int, size: int, path: list[str]) -> None:
    proof = hexes(path)
    assert ref_path(index, tuple(LEAVES[:size])) == proof
    assert root_from_inclusion_proof(index, size, leaf_hash(LEAVES[index]), proof) == root(size)
    assert verify_inclusion(index, size, leaf_hash(LEAVES[index]), proof, root(size))


@pytest.mark.parametrize(("old", "new", "path"), CONSISTENCY_VECTORS)
def test_consistency_vectors(old: int, new: int, path: list[str]) -> None:
    proof = hexes(path)
    if old < new:
        assert ref_consistency(old, tuple(LEAVES[:new])) == proof
    assert root_from_consistency_proof(old, new, root(old), proof) == root(new)
    assert verify_consistency(old, new, root(old), root(new), proof)


# --- Every proof of small trees --------------------------------------------------------------


@pytest.mark.parametrize("size", range(1, 34))
def test_every_reference_inclusion_proof_verifies(size: int) -> None:
    leaves = tree_leaves(size)
    top = mth(leaves)
    for index in range(size):
        proof = ref_path(index, leaves)
        assert verify_inclusion(index, size, leaf_hash(leaves[index]), proof, top)


@pytest.mark.parametrize("size", range(1, 34))
def test_every_reference_consistency_proof_verifies(size: int) -> None:
    leaves = tree_leaves(size)
    top = mth(leaves)
    assert verify_consistency(0, size, EMPTY_ROOT, top, [])
    assert verify_consistency(size, size, top, top, [])
    for old in range(1, size):
        proof = ref_consistency(old, leaves)
        assert verify_consistency(old, size, mth(leaves[:old]), top, proof)


def test_pymerkle_inclusion_paths_verify() -> None:
    """pymerkle's path is [leaf hash, audit path...]: the tail must verify here."""
    tree = pymerkle.InmemoryTree(algorithm="sha256")
    for size in range(1, 40):
        tree.append_entry(tree_leaves(40)[size - 1])
        top = tree.get_root(size)
        for index in range(size):
            proof = tree.prove_inclusion(index + 1, size)
            assert proof.path[0] == leaf_hash(tree_leaves(40)[index])
            assert verify_inclusion(index, size, proof.path[0], proof.path[1:], top)


# --- Tampering -------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [1, 2, 3, 5, 7, 8, 13, 16, 17])
def test_tampered_inclusion_proofs_fail(size: int) -> None:
    leaves = tree_leaves(size)
    top = mth(leaves)
    for index in range(size):
        good = ref_path(index, leaves)
        h = leaf_hash(leaves[index])
        assert verify_inclusion(index, size, h, good, top)
        for i in range(len(good)):
            for bit in (0, 7):
                bad = list(good)
                bad[i] = flipped(bad[i], bit)
                assert not verify_inclusion(index, size, h, bad, top)
        for other in range(size + 2):
            if other != index:
                assert not verify_inclusion(other, size, h, good, top)
        for wrong_size in range(1, 2 * size + 2):
            if wrong_size != size:
                same_shape = index < wrong_size and path_shape(index, wrong_size) == path_shape(
                    index, size
                )
                assert verify_inclusion(index, wrong_size, h, good, top) is same_shape
        if good:
            assert not verify_inclusion(index, size, h, good[:-1], top)
            assert not verify_inclusion(index, size, h, good[1:], top)
            assert not verify_inclusion(index, size, h, good[::-1], top) or len(good) == 1
        assert not verify_inclusion(index, size, h, [*good, good[-1] if good else top], top)
        assert not verify_inclusion(index, size, h, [top, *good], top)
        assert not verify_inclusion(index, size, leaf_hash(b"changed"), good, top)
        assert not verify_inclusion(index, size, flipped(h), good, top)
        assert not verify_inclusion(index, size, h, good, flipped(top))
        with pytest.raises(ProofError):
            root_from_inclusion_proof(index, size, h, [*good, top])


@pytest.mark.parametrize("size", [2, 3, 4, 5, 7, 8, 9, 16, 17])
def test_tampered_consistency_proofs_fail(size: int) -> None:
    leaves = tree_leaves(size)
    top = mth(leaves)
    for old in range(1, size):
        old_root = mth(leaves[:old])
        good = ref_consistency(old, leaves)
        assert verify_consistency(old, size, old_root, top, good)
        for i in range(len(good)):
            bad = list(good)
            bad[i] = flipped(bad[i])
            assert not verify_consistency(old, size, old_root, top, bad)
        assert not verify_consistency(old, size, old_root, top, good[:-1])
        assert not verify_consistency(old, size, old_root, top, [*good, top])
        assert not verify_consistency(old, size, old_root, top, [])
        assert not verify_consistency(old, size, flipped(old_root), top, good)
        assert not verify_consistency(old, size, old_root, flipped(top), good)
        assert not verify_consistency(size, old, top, old_root, good)
        shape = subproof_shape(old, size)
        for other_old in range(1, 2 * size + 2):
            for other_size in range(other_old, 2 * size + 2):
                if (other_old, other_size) != (old, size):
                    same_shape = other_old < other_size and (
                        subproof_shape(other_old, other_size) == shape
                    )
                    checked = verify_consistency(other_old, other_size, old_root, top, good)
                    assert checked is same_shape


def test_equal_and_empty_sizes() -> None:
    top = root(8)
    assert verify_consistency(8, 8, top, top, [])
    assert not verify_consistency(8, 8, top, root(7), [])
    assert not verify_consistency(8, 8, top, top, [top])
    assert verify_consistency(0, 8, EMPTY_ROOT, top, [])
    assert verify_consistency(0, 0, EMPTY_ROOT, EMPTY_ROOT, [])
    assert not verify_consistency(0, 0, EMPTY_ROOT, top, [])
    assert not verify_consistency(0, 8, top, top, [])
    assert not verify_consistency(0, 8, EMPTY_ROOT, top, [top])
    assert not verify_consistency(9, 8, top, top, [])
    with pytest.raises(ProofError):
        root_from_consistency_proof(0, 8, EMPTY_ROOT, [])


# --- Malformed input never crashes -----------------------------------------------------------

BAD_PROOFS: list[object] = [
    None,
    b"",
    "",
    "abc",
    b"\x00" * 32,
    [b"\x00" * 31],
    [b"\x00" * 33],
    ["00" * 32],
    [None],
    [bytearray(32)],
    [b"\x00" * 32] * 200,
    42,
    {b"\x00" * 32: 1},
]


@pytest.mark.parametrize("proof", BAD_PROOFS)
def test_malformed_proofs_are_false(proof: object) -> None:
    h = leaf_hash(b"x")
    assert verify_inclusion(0, 2, h, proof, root(2)) is False  # type: ignore[arg-type]
    assert verify_consistency(1, 2, root(1), root(2), proof) is False  # type: ignore[arg-type]
    assert verify_consistency(0, 2, EMPTY_ROOT, root(2), proof) is False  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("index", "size"),
    [(-1, 5), (5, 5), (6, 5), (0, 0), (0, -1), (True, 5), (0, 1 << 63), (1.0, 5), ("0", 5)],
)
def test_bad_index_or_size(index: object, size: object) -> None:
    h = leaf_hash(b"x")
    assert verify_inclusion(index, size, h, [], h) is False  # type: ignore[arg-type]
    with pytest.raises(ProofError):
        root_from_inclusion_proof(index, size, h, [])  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", [None, b"", b"\x00" * 31, "00" * 32, bytearray(32)])
def test_bad_hash_arguments(bad: object) -> None:
    h = leaf_hash(b"x")
    assert verify_inclusion(0, 1, bad, [], h) is False  # type: ignore[arg-type]
    assert verify_inclusion(0, 1, h, [], bad) is False  # type: ignore[arg-type]
    assert verify_consistency(1, 1, bad, h, []) is False  # type: ignore[arg-type]
    assert verify_consistency(1, 1, h, bad, []) is False  # type: ignore[arg-type]


@settings(max_examples=300, deadline=None)
@given(
    index=st.integers(-3, 1 << 64),
    size=st.integers(-3, 1 << 64),
    old=st.integers(-3, 1 << 64),
    proof=st.lists(st.binary(min_size=30, max_size=34), max_size=70),
    leaf=st.binary(min_size=31, max_size=33),
    top=st.binary(min_size=31, max_size=33),
)
def test_random_input_never_raises(
    index: int, size: int, old: int, proof: list[bytes], leaf: bytes, top: bytes
) -> None:
    assert verify_inclusion(index, size, leaf, proof, top) is False
    assert verify_consistency(old, size, leaf, top, proof) in (True, False)
