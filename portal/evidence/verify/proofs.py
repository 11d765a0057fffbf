"""Merkle tree hashing and proof verification, exactly as RFC 9162 §2.1 (and RFC 6962) define them.

Standard library only, so that the offline verifier can be audited and run anywhere.

- ``leaf_hash(data) = SHA-256(0x00 || data)`` and ``node_hash(l, r) = SHA-256(0x01 || l || r)``;
  the hash of the empty tree is ``SHA-256()`` (RFC 9162 §2.1.1).
- ``root_from_inclusion_proof`` runs the algorithm of RFC 9162 §2.1.3.2 and returns the root it
  implies, raising :class:`ProofError` for a proof that cannot be run (index outside the tree,
  a hash of the wrong length, too few or too many hashes). ``verify_inclusion`` compares that root
  with the expected one in constant time and returns a plain ``bool``.
- ``verify_consistency`` runs RFC 9162 §2.1.4.2 and returns a ``bool``. Beyond the RFC, which
  only covers ``0 < old_size < new_size``: equal sizes need an empty proof and equal roots, and
  an old size of 0 needs an empty proof and the empty-tree root.

The verification functions never raise on bad input (wrong types, wrong lengths, negative or
absurd sizes, extra hashes): they answer ``False``.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence

__all__ = [
    "EMPTY_ROOT",
    "HASH_SIZE",
    "MAX_TREE_SIZE",
    "ProofError",
    "leaf_hash",
    "node_hash",
    "root_from_consistency_proof",
    "root_from_inclusion_proof",
    "verify_consistency",
    "verify_inclusion",
]

HASH_SIZE = 32
#: Trees are limited to 2**63 leaves (a signed 64-bit size, as in Go's tlog and SQL BIGINT).
MAX_TREE_SIZE = 1 << 63
#: The root hash of the empty tree: SHA-256 of the empty string (RFC 9162 §2.1.1).
EMPTY_ROOT = hashlib.sha256(b"").digest()

_LEAF_PREFIX = b"\x00"
_NODE_PREFIX = b"\x01"


class ProofError(ValueError):
    """A proof, index or size that cannot be checked (malformed input)."""


def leaf_hash(data: bytes) -> bytes:
    """The hash of a leaf: SHA-256(0x00 || data)."""
    return hashlib.sha256(_LEAF_PREFIX + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """The hash of an interior node: SHA-256(0x01 || left || right)."""
    return hashlib.sha256(_NODE_PREFIX + left + right).digest()


def _is_hash(value: object) -> bool:
    return isinstance(value, bytes) and len(value) == HASH_SIZE


def _is_size(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < MAX_TREE_SIZE


def _check_hashes(proof: object) -> list[bytes]:
    if isinstance(proof, (bytes, str)) or not isinstance(proof, Sequence):
        raise ProofError("the proof must be a list of hashes")
    if len(proof) > 2 * 64:
        raise ProofError("the proof is too long")
    hashes = list(proof)
    for value in hashes:
        if not _is_hash(value):
            raise ProofError(f"every proof hash must be {HASH_SIZE} bytes")
    return hashes


def root_from_inclusion_proof(
    index: int, size: int, leaf_hash: bytes, proof: Sequence[bytes]
) -> bytes:
    """The root of the tree of ``size`` leaves implied by ``proof`` for leaf ``index``.

    RFC 9162 §2.1.3.2, steps 1-5, without the final comparison with the expected root.
    Raises :class:`ProofError` when the proof cannot be run.
    """
    if not _is_size(size) or not _is_size(index):
        raise ProofError("the index and size must be integers in [0, 2**63)")
    if index >= size:
        raise ProofError(f"leaf index {index} is not in a tree of {size} leaves")
    if not _is_hash(leaf_hash):
        raise ProofError(f"the leaf hash must be {HASH_SIZE} bytes")
    hashes = _check_hashes(proof)

    fn, sn = index, size - 1
    r = leaf_hash
    for p in hashes:
        if sn == 0:
            raise ProofError("the proof has more hashes than the tree needs")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("the proof has fewer hashes than the tree needs")
    return r


def verify_inclusion(
    index: int, size: int, leaf_hash: bytes, proof: Sequence[bytes], root: bytes
) -> bool:
    """Whether ``proof`` shows that leaf ``index`` with hash ``leaf_hash`` is in the tree of
    ``size`` leaves whose root is ``root`` (RFC 9162 §2.1.3.2). False on any malformed input."""
    if not _is_hash(root):
        return False
    try:
        computed = root_from_inclusion_proof(index, size, leaf_hash, proof)
    except ProofError:
        return False
    return hmac.compare_digest(computed, root)


def root_from_consistency_proof(
    old_size: int, new_size: int, old_root: bytes, proof: Sequence[bytes]
) -> bytes:
    """The new root implied by a consistency proof, after checking that the same proof also
    yields ``old_root`` (RFC 9162 §2.1.4.2). Raises :class:`ProofError` otherwise."""
    if not _is_size(old_size) or not _is_size(new_size):
        raise ProofError("tree sizes must be integers in [0, 2**63)")
    if old_size > new_size:
        raise ProofError(f"the old size {old_size} is larger than the new size {new_size}")
    if not _is_hash(old_root):
        raise ProofError(f"the old root must be {HASH_SIZE} bytes")
    hashes = _check_hashes(proof)

    if old_size == 0:
        if hashes:
            raise ProofError("a proof from the empty tree must be empty")
        if not hmac.compare_digest(old_root, EMPTY_ROOT):
            raise ProofError("the old root is not the root of the empty tree")
        raise ProofError("any tree extends the empty tree; there is no root to compute")
    if old_size == new_size:
        if hashes:
            raise ProofError("a proof between equal sizes must be empty")
        return old_root

    # 1. An empty proof fails.
    if not hashes:
        raise ProofError("the consistency proof is empty")
    # 2. If the old size is an exact power of two, prepend the old root.
    if old_size & (old_size - 1) == 0:
        hashes = [old_root, *hashes]
    # 3.
    fn, sn = old_size - 1, new_size - 1
    # 4.
    while fn & 1:
        fn >>= 1
        sn >>= 1
    # 5.
    fr = sr = hashes[0]
    # 6.
    for c in hashes[1:]:
        if sn == 0:
            raise ProofError("the proof has more hashes than the trees need")
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    # 7.
    if sn != 0:
        raise ProofError("the proof has fewer hashes than the trees need")
    if not hmac.compare_digest(fr, old_root):
        raise ProofError("the proof does not yield the old root")
    return sr


def verify_consistency(
    old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]
) -> bool:
    """Whether ``proof`` shows that the tree of ``new_size`` leaves with root ``new_root``
    extends the tree of ``old_size`` leaves with root ``old_root`` (RFC 9162 §2.1.4.2).
    False on any malformed input."""
    if not _is_hash(new_root):
        return False
    if _is_size(old_size) and old_size == 0 and _is_size(new_size):
        # Every tree extends the empty tree; the proof must be empty.
        return (
            _is_hash(old_root)
            and hmac.compare_digest(old_root, EMPTY_ROOT)
            and isinstance(proof, Sequence)
            and not isinstance(proof, (bytes, str))
            and len(proof) == 0
            and (new_size > 0 or hmac.compare_digest(new_root, EMPTY_ROOT))
        )
    try:
        computed = root_from_consistency_proof(old_size, new_size, old_root, proof)
    except ProofError:
        return False
    return hmac.compare_digest(computed, new_root)
