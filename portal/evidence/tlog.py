"""The evidence log's Merkle tree: where its hashes are stored and how proofs are built.

A Python port of the design of Go's ``golang.org/x/mod/sumdb/tlog`` (``tlog.go``; the dense
hash layout is the one ``tile.go`` builds its tiles on), copyright 2019 The Go Authors, used
under the BSD licence reproduced at the end of this file. The trees and proofs are those of
RFC 9162 / RFC 6962, so everything built here verifies with :mod:`portal.evidence.verify.proofs`.
One deliberate difference from Go: the hash of the empty tree is SHA-256 of the empty string,
as RFC 9162 defines it, not 32 zero bytes.

Storage. Every leaf hash and every hash of a *complete* subtree is stored once, never changed,
at a dense position ``stored_hash_index(level, n)`` (Crosby and Wallach's layout): appending leaf
``n`` writes its leaf hash and the hashes of the subtrees it completes, at consecutive positions
starting at ``stored_hash_index(0, n)``. A store is anything that can return the hashes at a list
of positions, so a SQL table ``(idx BIGINT PRIMARY KEY, hash BYTEA)`` does.

Each operation comes in three pieces, so that an async SQL store fetches everything it needs in
one ``WHERE idx IN (...)`` query:

- ``*_indexes(...)`` says which stored positions the operation needs (pure arithmetic);
- ``assemble_*(..., hashes)`` computes the result from a mapping ``position -> hash``;
- the plain function (``tree_hash``, ``prove_record``...) does both with a synchronous
  :class:`HashReader`, in exactly one ``read_hashes`` call; the ``*_async`` variants do the same
  with an :class:`AsyncHashReader`.

:class:`MemoryHashStore` keeps the hashes in a list, for tests and tools.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Protocol

from portal.evidence.verify.proofs import EMPTY_ROOT, HASH_SIZE, leaf_hash, node_hash

__all__ = [
    "AsyncHashReader",
    "HashReader",
    "MemoryHashStore",
    "TlogError",
    "append_indexes",
    "append_leaves",
    "append_leaves_async",
    "assemble_append",
    "assemble_record_proof",
    "assemble_stored_hashes",
    "assemble_tree_hash",
    "assemble_tree_proof",
    "prove_record",
    "prove_record_async",
    "prove_tree",
    "prove_tree_async",
    "record_proof_indexes",
    "split_stored_hash_index",
    "stored_hash_count",
    "stored_hash_index",
    "stored_hashes",
    "stored_hashes_indexes",
    "tree_hash",
    "tree_hash_async",
    "tree_hash_indexes",
    "tree_proof_indexes",
]

MAX_TREE_SIZE = 1 << 63


class TlogError(ValueError):
    """Invalid arguments, or a hash store that did not return what was asked."""


class HashReader(Protocol):
    """Reads stored hashes (see :func:`stored_hash_index`).

    Must return exactly one 32-byte hash per requested position, in the same order, or raise.
    Positions arrive in no particular order and may be unsorted.
    """

    def read_hashes(self, indexes: Sequence[int]) -> list[bytes]: ...


class AsyncHashReader(Protocol):
    """The asynchronous form of :class:`HashReader`, for a store behind an async database."""

    async def read_hashes(self, indexes: Sequence[int]) -> list[bytes]: ...


# ---------------------------------------------------------------------------------------------
# Layout of stored hashes


def _check_count(name: str, value: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < MAX_TREE_SIZE:
        raise TlogError(f"{name} must be an integer in [0, 2**63), not {value!r}")


def _trailing_ones(n: int) -> int:
    """The number of trailing 1 bits of ``n`` (the trailing zeros of ``n + 1``)."""
    m = n + 1
    return (m & -m).bit_length() - 1


def _maxpow2(n: int) -> tuple[int, int]:
    """The largest power of two ``k`` smaller than ``n`` (``n >= 2``), and ``log2(k)``."""
    level = (n - 1).bit_length() - 1
    return 1 << level, level


def stored_hash_index(level: int, n: int) -> int:
    """The storage position of the ``n``-th hash at ``level`` (level 0 = leaves).

    Level L's n-th hash is stored right after level L+1's (2n+1)-th hash, which reduces to
    level 0, whose n-th hash is at n + n/2 + n/4 + ... = 2n - popcount(n).
    """
    _check_count("level", level)
    _check_count("n", n)
    if level > 63:
        raise TlogError(f"level must be at most 63, not {level}")
    m = ((n + 1) << level) - 1
    return 2 * m - m.bit_count() + level


def split_stored_hash_index(index: int) -> tuple[int, int]:
    """The inverse of :func:`stored_hash_index`: ``(level, n)`` for a storage position."""
    _check_count("index", index)
    # stored_hash_index(0, n) < 2n, so the leaf written last before `index` is in
    # [index/2, index/2 + log2(index)].
    n = index // 2
    index_n = stored_hash_index(0, n)
    while True:
        # Leaf n writes 1 + trailing_ones(n) hashes.
        x = index_n + 1 + _trailing_ones(n)
        if x > index:
            break
        n += 1
        index_n = x
    # The hash was written with leaf n: it is one of (0, n), (1, n/2), (2, n/4), ...
    level = index - index_n
    return level, n >> level


def stored_hash_count(n: int) -> int:
    """The number of hashes stored for a tree of ``n`` leaves."""
    _check_count("n", n)
    if n == 0:
        return 0
    # The hashes up to the last leaf hash, plus those of the subtrees that leaf completes.
    return stored_hash_index(0, n - 1) + 1 + _trailing_ones(n - 1)


# ---------------------------------------------------------------------------------------------
# Appending


def stored_hashes_indexes(n: int) -> list[int]:
    """The stored positions needed to append leaf ``n``: the left siblings of the subtrees
    that leaf completes (at most log2(n) of them), in increasing order."""
    _check_count("n", n)
    m = _trailing_ones(n)
    return [stored_hash_index(i, (n >> i) - 1) for i in reversed(range(m))]


def assemble_stored_hashes(n: int, record_hash: bytes, hashes: Mapping[int, bytes]) -> list[bytes]:
    """The hashes to store, from position ``stored_hash_index(0, n)`` on, when appending leaf
    ``n`` whose leaf hash is ``record_hash``; ``hashes`` holds :func:`stored_hashes_indexes`."""
    if not isinstance(record_hash, bytes) or len(record_hash) != HASH_SIZE:
        raise TlogError(f"a record hash is {HASH_SIZE} bytes")
    _check_count("n", n)
    h = record_hash
    out = [h]
    for i in range(_trailing_ones(n)):
        h = node_hash(_get(hashes, stored_hash_index(i, (n >> i) - 1)), h)
        out.append(h)
    return out


def stored_hashes(n: int, leaf_data: bytes, reader: HashReader) -> list[bytes]:
    """The hashes to store, from position ``stored_hash_index(0, n)`` on, when appending leaf
    ``n`` with content ``leaf_data`` (at most 1 + log2(n) hashes, two on average)."""
    hashes = _read(reader, stored_hashes_indexes(n))
    return assemble_stored_hashes(n, leaf_hash(leaf_data), hashes)


def append_indexes(size: int, count: int) -> list[int]:
    """The stored positions needed to append ``count`` leaves to a tree of ``size`` leaves.

    Only positions already in storage are listed (hashes written by earlier leaves of the same
    batch are computed along the way), sorted and without duplicates: one query for a batch.
    """
    _check_count("size", size)
    _check_count("count", count)
    if size + count >= MAX_TREE_SIZE:
        raise TlogError("the tree would grow beyond 2**63 leaves")
    stored = stored_hash_count(size)
    needed: set[int] = set()
    for n in range(size, size + count):
        needed.update(i for i in stored_hashes_indexes(n) if i < stored)
    return sorted(needed)


def assemble_append(
    size: int, record_hashes: Sequence[bytes], hashes: Mapping[int, bytes]
) -> list[tuple[int, bytes]]:
    """The new ``(position, hash)`` pairs to store when appending leaves with the given leaf
    hashes to a tree of ``size`` leaves; ``hashes`` holds :func:`append_indexes`."""
    _check_count("size", size)
    overlay = dict(hashes)
    out: list[tuple[int, bytes]] = []
    for offset, record_hash in enumerate(record_hashes):
        n = size + offset
        start = stored_hash_index(0, n)
        for k, h in enumerate(assemble_stored_hashes(n, record_hash, overlay)):
            overlay[start + k] = h
            out.append((start + k, h))
    return out


def append_leaves(
    size: int, leaves: Iterable[bytes], reader: HashReader
) -> list[tuple[int, bytes]]:
    """Append a batch of leaf contents to a tree of ``size`` leaves: the ``(position, hash)``
    pairs to store, computed with at most one ``read_hashes`` call."""
    record_hashes = [leaf_hash(data) for data in leaves]
    hashes = _read(reader, append_indexes(size, len(record_hashes)))
    return assemble_append(size, record_hashes, hashes)


async def append_leaves_async(
    size: int, leaves: Iterable[bytes], reader: AsyncHashReader
) -> list[tuple[int, bytes]]:
    """:func:`append_leaves` with an asynchronous store."""
    record_hashes = [leaf_hash(data) for data in leaves]
    indexes = append_indexes(size, len(record_hashes))
    hashes = _check_read(indexes, await reader.read_hashes(indexes) if indexes else [])
    return assemble_append(size, record_hashes, hashes)


# ---------------------------------------------------------------------------------------------
# Tree hashes


def _sub_tree_index(lo: int, hi: int, need: list[int]) -> list[int]:
    """Append the positions needed for the hash of the subtree of leaves [lo, hi): the complete
    subtrees it splits into, largest (leftmost) first."""
    while lo < hi:
        k, level = _maxpow2(hi - lo + 1)
        if lo & (k - 1):
            raise AssertionError("tlog: bad math in _sub_tree_index")
        need.append(stored_hash_index(level, lo >> level))
        lo += k
    return need


def _sub_tree_hash(lo: int, hi: int, hashes: Mapping[int, bytes]) -> bytes:
    """The hash of the subtree of leaves [lo, hi), from the hashes of its complete subtrees."""
    parts = [_get(hashes, i) for i in _sub_tree_index(lo, hi, [])]
    h = parts[-1]
    for left in reversed(parts[:-1]):
        h = node_hash(left, h)
    return h


def tree_hash_indexes(n: int) -> list[int]:
    """The stored positions needed for the root of the tree of ``n`` leaves (at most
    1 + log2(n))."""
    _check_count("n", n)
    return _sub_tree_index(0, n, [])


def assemble_tree_hash(n: int, hashes: Mapping[int, bytes]) -> bytes:
    """The root of the tree of ``n`` leaves; ``hashes`` holds :func:`tree_hash_indexes`."""
    _check_count("n", n)
    if n == 0:
        return EMPTY_ROOT
    return _sub_tree_hash(0, n, hashes)


def tree_hash(n: int, reader: HashReader) -> bytes:
    """The root of the tree of ``n`` leaves (RFC 9162 MTH), in one ``read_hashes`` call."""
    return assemble_tree_hash(n, _read(reader, tree_hash_indexes(n)))


async def tree_hash_async(n: int, reader: AsyncHashReader) -> bytes:
    """:func:`tree_hash` with an asynchronous store."""
    indexes = tree_hash_indexes(n)
    hashes = _check_read(indexes, await reader.read_hashes(indexes) if indexes else [])
    return assemble_tree_hash(n, hashes)


# ---------------------------------------------------------------------------------------------
# Inclusion ("record") proofs, RFC 9162 §2.1.3.1


def _check_record_args(t: int, n: int) -> None:
    _check_count("t", t)
    _check_count("n", n)
    if n >= t:
        raise TlogError(f"leaf {n} is not in a tree of {t} leaves")


def _leaf_proof_index(lo: int, hi: int, n: int, need: list[int]) -> list[int]:
    if not lo <= n < hi:
        raise AssertionError("tlog: bad math in _leaf_proof_index")
    if lo + 1 == hi:
        return need
    k, _ = _maxpow2(hi - lo)
    if n < lo + k:
        _leaf_proof_index(lo, lo + k, n, need)
        _sub_tree_index(lo + k, hi, need)
    else:
        _sub_tree_index(lo, lo + k, need)
        _leaf_proof_index(lo + k, hi, n, need)
    return need


def _leaf_proof(lo: int, hi: int, n: int, hashes: Mapping[int, bytes]) -> list[bytes]:
    if lo + 1 == hi:
        # The verifier knows the leaf hash itself.
        return []
    # Walk down towards n, recording the hash of the side not taken.
    k, _ = _maxpow2(hi - lo)
    if n < lo + k:
        proof = _leaf_proof(lo, lo + k, n, hashes)
        proof.append(_sub_tree_hash(lo + k, hi, hashes))
    else:
        proof = _leaf_proof(lo + k, hi, n, hashes)
        proof.append(_sub_tree_hash(lo, lo + k, hashes))
    return proof


def record_proof_indexes(t: int, n: int) -> list[int]:
    """The stored positions needed to prove that leaf ``n`` is in the tree of ``t`` leaves."""
    _check_record_args(t, n)
    return _leaf_proof_index(0, t, n, [])


def assemble_record_proof(t: int, n: int, hashes: Mapping[int, bytes]) -> list[bytes]:
    """The inclusion proof (audit path, leaf to root) of leaf ``n`` in the tree of ``t``
    leaves; ``hashes`` holds :func:`record_proof_indexes`."""
    _check_record_args(t, n)
    return _leaf_proof(0, t, n, hashes)


def prove_record(t: int, n: int, reader: HashReader) -> list[bytes]:
    """The inclusion proof of leaf ``n`` in the tree of ``t`` leaves, in one read."""
    return assemble_record_proof(t, n, _read(reader, record_proof_indexes(t, n)))


async def prove_record_async(t: int, n: int, reader: AsyncHashReader) -> list[bytes]:
    """:func:`prove_record` with an asynchronous store."""
    indexes = record_proof_indexes(t, n)
    hashes = _check_read(indexes, await reader.read_hashes(indexes) if indexes else [])
    return assemble_record_proof(t, n, hashes)


# ---------------------------------------------------------------------------------------------
# Consistency ("tree") proofs, RFC 9162 §2.1.4.1


def _check_tree_args(t: int, n: int) -> None:
    _check_count("t", t)
    _check_count("n", n)
    if n > t:
        raise TlogError(f"the old size {n} is larger than the new size {t}")


def _tree_proof_index(lo: int, hi: int, n: int, need: list[int]) -> list[int]:
    if not lo < n <= hi:
        raise AssertionError("tlog: bad math in _tree_proof_index")
    if n == hi:
        if lo == 0:
            return need
        return _sub_tree_index(lo, hi, need)
    k, _ = _maxpow2(hi - lo)
    if n <= lo + k:
        _tree_proof_index(lo, lo + k, n, need)
        _sub_tree_index(lo + k, hi, need)
    else:
        _sub_tree_index(lo, lo + k, need)
        _tree_proof_index(lo + k, hi, n, need)
    return need


def _tree_proof(lo: int, hi: int, n: int, hashes: Mapping[int, bytes]) -> list[bytes]:
    if n == hi:
        if lo == 0:
            # This subtree is the old tree: the verifier knows its hash.
            return []
        return [_sub_tree_hash(lo, hi, hashes)]
    k, _ = _maxpow2(hi - lo)
    if n <= lo + k:
        proof = _tree_proof(lo, lo + k, n, hashes)
        proof.append(_sub_tree_hash(lo + k, hi, hashes))
    else:
        proof = _tree_proof(lo + k, hi, n, hashes)
        proof.append(_sub_tree_hash(lo, lo + k, hashes))
    return proof


def tree_proof_indexes(t: int, n: int) -> list[int]:
    """The stored positions needed to prove that the tree of ``t`` leaves extends the tree of
    ``n`` leaves (none when ``n`` is 0 or ``n == t``)."""
    _check_tree_args(t, n)
    if n == 0:
        return []
    return _tree_proof_index(0, t, n, [])


def assemble_tree_proof(t: int, n: int, hashes: Mapping[int, bytes]) -> list[bytes]:
    """The consistency proof from the tree of ``n`` leaves to the tree of ``t`` leaves;
    ``hashes`` holds :func:`tree_proof_indexes`. Empty when ``n`` is 0 or ``n == t``."""
    _check_tree_args(t, n)
    if n == 0:
        return []
    return _tree_proof(0, t, n, hashes)


def prove_tree(t: int, n: int, reader: HashReader) -> list[bytes]:
    """The consistency proof from the tree of ``n`` leaves to that of ``t`` leaves, in one
    read."""
    return assemble_tree_proof(t, n, _read(reader, tree_proof_indexes(t, n)))


async def prove_tree_async(t: int, n: int, reader: AsyncHashReader) -> list[bytes]:
    """:func:`prove_tree` with an asynchronous store."""
    indexes = tree_proof_indexes(t, n)
    hashes = _check_read(indexes, await reader.read_hashes(indexes) if indexes else [])
    return assemble_tree_proof(t, n, hashes)


# ---------------------------------------------------------------------------------------------
# Reading


def _get(hashes: Mapping[int, bytes], index: int) -> bytes:
    try:
        h = hashes[index]
    except KeyError:
        raise TlogError(f"the hash at stored position {index} was not provided") from None
    if not isinstance(h, bytes) or len(h) != HASH_SIZE:
        raise TlogError(f"the hash at stored position {index} is not {HASH_SIZE} bytes")
    return h


def _check_read(indexes: Sequence[int], hashes: Sequence[bytes]) -> dict[int, bytes]:
    if len(hashes) != len(indexes):
        raise TlogError(f"read_hashes({len(indexes)} positions) returned {len(hashes)} hashes")
    out: dict[int, bytes] = {}
    for index, h in zip(indexes, hashes, strict=True):
        if not isinstance(h, bytes) or len(h) != HASH_SIZE:
            raise TlogError(f"the hash at stored position {index} is not {HASH_SIZE} bytes")
        out[index] = h
    return out


def _read(reader: HashReader, indexes: Sequence[int]) -> dict[int, bytes]:
    """One ``read_hashes`` call (none when nothing is needed), checked and keyed by position."""
    if not indexes:
        return {}
    return _check_read(indexes, reader.read_hashes(indexes))


class MemoryHashStore:
    """A log kept in memory: the stored hashes in a list, positions as list indexes.

    ``read_calls`` counts :meth:`read_hashes` calls, so tests can check the batching.
    """

    def __init__(self) -> None:
        self.hashes: list[bytes] = []
        self.size = 0
        self.read_calls = 0

    def read_hashes(self, indexes: Sequence[int]) -> list[bytes]:
        self.read_calls += 1
        out = []
        for i in indexes:
            if not 0 <= i < len(self.hashes):
                raise TlogError(f"no hash stored at position {i}")
            out.append(self.hashes[i])
        return out

    def append(self, leaves: Iterable[bytes]) -> list[tuple[int, bytes]]:
        """Append leaf contents; returns the new ``(position, hash)`` pairs, as stored."""
        batch = list(leaves)
        new = append_leaves(self.size, batch, self)
        for index, h in new:
            if index != len(self.hashes):
                raise AssertionError("tlog: stored hashes out of order")
            self.hashes.append(h)
        self.size += len(batch)
        if stored_hash_count(self.size) != len(self.hashes):
            raise AssertionError("tlog: bad stored hash count")
        return new

    def tree_hash(self, size: int | None = None) -> bytes:
        return tree_hash(self.size if size is None else self._within(size), self)

    def prove_record(self, size: int, index: int) -> list[bytes]:
        return prove_record(self._within(size), index, self)

    def prove_tree(self, size: int, old_size: int) -> list[bytes]:
        return prove_tree(self._within(size), old_size, self)

    def _within(self, size: int) -> int:
        _check_count("size", size)
        if size > self.size:
            raise TlogError(f"the log has only {self.size} leaves, not {size}")
        return size


# ---------------------------------------------------------------------------------------------
# Licence of the Go code this module ports (golang.org/x/mod, sumdb/tlog):
#
# Copyright 2009 The Go Authors.
#
# Redistribution and use in source and binary forms, with or without
# modification, are permitted provided that the following conditions are
# met:
#
#    * Redistributions of source code must retain the above copyright
# notice, this list of conditions and the following disclaimer.
#    * Redistributions in binary form must reproduce the above
# copyright notice, this list of conditions and the following disclaimer
# in the documentation and/or other materials provided with the
# distribution.
#    * Neither the name of Google LLC nor the names of its
# contributors may be used to endorse or promote products derived from
# this software without specific prior written permission.
#
# THIS SOFTWARE IS PROVIDED BY THE COPYRIGHT HOLDERS AND CONTRIBUTORS
# "AS IS" AND ANY EXPRESS OR IMPLIED WARRANTIES, INCLUDING, BUT NOT
# LIMITED TO, THE IMPLIED WARRANTIES OF MERCHANTABILITY AND FITNESS FOR
# A PARTICULAR PURPOSE ARE DISCLAIMED. IN NO EVENT SHALL THE COPYRIGHT
# OWNER OR CONTRIBUTORS BE LIABLE FOR ANY DIRECT, INDIRECT, INCIDENTAL,
# SPECIAL, EXEMPLARY, OR CONSEQUENTIAL DAMAGES (INCLUDING, BUT NOT
# LIMITED TO, PROCUREMENT OF SUBSTITUTE GOODS OR SERVICES; LOSS OF USE,
# DATA, OR PROFITS; OR BUSINESS INTERRUPTION) HOWEVER CAUSED AND ON ANY
# THEORY OF LIABILITY, WHETHER IN CONTRACT, STRICT LIABILITY, OR TORT
# (INCLUDING NEGLIGENCE OR OTHERWISE) ARISING IN ANY WAY OUT OF THE USE
# OF THIS SOFTWARE, EVEN IF ADVISED OF THE POSSIBILITY OF SUCH DAMAGE.
