"""The log's tree (portal.evidence.tlog) and checkpoint signer (portal.evidence.checkpoints):
layout, RFC 6962 vectors, pymerkle, one read per proof, and a state machine that appends,
signs, proves and tries to forge."""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Sequence
from functools import cache

import pymerkle
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from portal.evidence import tlog
from portal.evidence.checkpoints import CheckpointRefused, CheckpointSigner, SignedCheckpoint
from portal.evidence.tlog import (
    MemoryHashStore,
    TlogError,
    append_indexes,
    assemble_record_proof,
    assemble_tree_hash,
    assemble_tree_proof,
    prove_record,
    prove_tree,
    record_proof_indexes,
    split_stored_hash_index,
    stored_hash_count,
    stored_hash_index,
    stored_hashes,
    tree_hash,
    tree_hash_indexes,
    tree_proof_indexes,
)
from portal.evidence.verify.note import format_checkpoint, open_checkpoint, sign_note
from portal.evidence.verify.proofs import (
    EMPTY_ROOT,
    leaf_hash,
    node_hash,
    verify_consistency,
    verify_inclusion,
)
from tests.evidence.test_proofs import CONSISTENCY_VECTORS, INCLUSION_VECTORS, LEAVES, ROOTS

ORIGIN = "jiefen.test/evidence-log"


def split_point(n: int) -> int:
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def mth(leaves: Sequence[bytes]) -> bytes:
    """RFC 9162 MTH, written out literally."""
    if not leaves:
        return hashlib.sha256(b"").digest()
    if len(leaves) == 1:
        return leaf_hash(leaves[0])
    k = split_point(len(leaves))
    return node_hash(mth(leaves[:k]), mth(leaves[k:]))


def ref_subproof(m: int, leaves: Sequence[bytes], b: bool) -> list[bytes]:
    """RFC 9162 §2.1.4.1 SUBPROOF."""
    n = len(leaves)
    if m == n:
        return [] if b else [mth(leaves)]
    k = split_point(n)
    if m <= k:
        return [*ref_subproof(m, leaves[:k], b), mth(leaves[k:])]
    return [*ref_subproof(m - k, leaves[k:], False), mth(leaves[:k])]


@cache
def leaves_64() -> tuple[bytes, ...]:
    return tuple(f"entry {i}".encode() for i in range(64))


@cache
def store_64() -> MemoryHashStore:
    store = MemoryHashStore()
    store.append(leaves_64())
    return store


@cache
def pymerkle_64() -> pymerkle.InmemoryTree:
    tree = pymerkle.InmemoryTree(algorithm="sha256")
    for data in leaves_64():
        tree.append_entry(data)
    return tree


# --- Layout ----------------------------------------------------------------------------------


def test_stored_hash_index_layout() -> None:
    # Leaf 0 -> 0; leaf 1 -> 1 and (1,0) -> 2; leaf 2 -> 3; leaf 3 -> 4, (1,1) -> 5, (2,0) -> 6.
    assert [stored_hash_index(0, n) for n in range(5)] == [0, 1, 3, 4, 7]
    assert stored_hash_index(1, 0) == 2
    assert stored_hash_index(1, 1) == 5
    assert stored_hash_index(2, 0) == 6
    assert [stored_hash_count(n) for n in range(9)] == [0, 1, 3, 4, 7, 8, 10, 11, 15]


def test_split_is_the_inverse() -> None:
    seen = set()
    for level in range(12):
        for n in range(0, 3000, 7):
            index = stored_hash_index(level, n)
            assert split_stored_hash_index(index) == (level, n)
            seen.add(index)
    for index in range(5000):
        level, n = split_stored_hash_index(index)
        assert stored_hash_index(level, n) == index
    big = stored_hash_index(3, 10**15)
    assert split_stored_hash_index(big) == (3, 10**15)


def test_stored_hashes_match_a_growing_store() -> None:
    store = MemoryHashStore()
    for n, data in enumerate(leaves_64()):
        new = stored_hashes(n, data, store)
        assert len(store.hashes) == stored_hash_index(0, n)
        store.hashes.extend(new)
        store.size += 1
        assert len(store.hashes) == stored_hash_count(n + 1)
    assert store.hashes == store_64().hashes


@pytest.mark.parametrize("cuts", [[], [1], [3, 4, 5], [8, 9, 30], list(range(1, 64))])
def test_batches_do_not_change_the_hashes(cuts: list[int]) -> None:
    store = MemoryHashStore()
    bounds = [0, *cuts, 64]
    for lo, hi in itertools.pairwise(bounds):
        calls = store.read_calls
        new = store.append(leaves_64()[lo:hi])
        assert store.read_calls - calls <= 1
        assert [i for i, _ in new] == list(range(stored_hash_count(lo), stored_hash_count(hi)))
    assert store.hashes == store_64().hashes
    assert append_indexes(5, 0) == []


# --- RFC 6962 and pymerkle -------------------------------------------------------------------


def test_rfc_6962_vectors() -> None:
    store = MemoryHashStore()
    assert store.tree_hash().hex() == ROOTS[0]
    for size, data in enumerate(LEAVES, 1):
        store.append([data])
        assert store.tree_hash().hex() == ROOTS[size]
    for size in range(9):
        assert store.tree_hash(size).hex() == ROOTS[size]
    for index, size, path in INCLUSION_VECTORS:
        assert [h.hex() for h in store.prove_record(size, index)] == path
    for old, new, path in CONSISTENCY_VECTORS:
        assert [h.hex() for h in store.prove_tree(new, old)] == path
    assert store.prove_tree(8, 0) == []


@pytest.mark.parametrize("size", range(1, 65))
def test_against_pymerkle(size: int) -> None:
    """Every root, inclusion proof and consistency proof up to 64 leaves."""
    store, tree, leaves = store_64(), pymerkle_64(), leaves_64()[:size]
    top = store.tree_hash(size)
    assert top == tree.get_root(size) == mth(leaves)
    for index in range(size):
        proof = store.prove_record(size, index)
        reference = tree.prove_inclusion(index + 1, size)
        # pymerkle's path is the leaf hash followed by the RFC 9162 audit path.
        assert [leaf_hash(leaves[index]), *proof] == reference.path
        assert verify_inclusion(index, size, leaf_hash(leaves[index]), proof, top)
    for old in range(1, size + 1):
        old_root = store.tree_hash(old)
        proof = store.prove_tree(size, old)
        assert proof == (ref_subproof(old, leaves, True) if old < size else [])
        assert verify_consistency(old, size, old_root, top, proof)
        # pymerkle's own consistency proof (a different layout) agrees on both roots.
        pymerkle.verify_consistency(old_root, top, tree.prove_consistency(old, size))
    assert store.prove_tree(size, 0) == []
    assert verify_consistency(0, size, EMPTY_ROOT, top, [])


# --- One read per operation, with dicts for async stores -------------------------------------


class CountingReader:
    """A log of ``size`` identical leaves: every complete subtree at level L has the same hash,
    so the stored hashes of a huge tree are known without storing them."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.calls: list[list[int]] = []
        self.level_hashes = [leaf_hash(b"same")]
        for _ in range(64):
            self.level_hashes.append(node_hash(self.level_hashes[-1], self.level_hashes[-1]))

    def read_hashes(self, indexes: Sequence[int]) -> list[bytes]:
        self.calls.append(list(indexes))
        out = []
        for index in indexes:
            assert index < stored_hash_count(self.size), "read beyond the stored hashes"
            level, _ = split_stored_hash_index(index)
            out.append(self.level_hashes[level])
        return out


@pytest.mark.parametrize("index", [0, 1, 123_456, 524_287, 524_288, 999_998, 999_999])
def test_a_million_leaves_needs_about_twenty_hashes_in_one_read(index: int) -> None:
    size = 1_000_000
    reader = CountingReader(size)
    top = tree_hash(size, reader)
    proof = prove_record(size, index, reader)
    consistency = prove_tree(size, index + 1, reader)
    assert len(reader.calls) <= 3  # one batch each for the root, the proof and the consistency
    assert all(len(set(call)) == len(call) for call in reader.calls)
    assert len(reader.calls[0]) <= 20  # root: one hash per 1 bit of the size
    assert len(proof) <= 20
    if index < 1 << 19:  # the left half: 19 levels of it, plus the right side's root
        assert len(proof) == 20
    assert len(reader.calls[1]) <= 2 * 20
    assert len(consistency) <= 2 * 20
    assert verify_inclusion(index, size, reader.level_hashes[0], proof, top)
    old_root = tree_hash(index + 1, reader)
    assert verify_consistency(index + 1, size, old_root, top, consistency)


def test_assembling_from_a_dict() -> None:
    store = store_64()
    for size in (1, 13, 64):
        hashes = {i: store.hashes[i] for i in tree_hash_indexes(size)}
        assert assemble_tree_hash(size, hashes) == store.tree_hash(size)
        for index in (0, size // 2, size - 1):
            wanted = record_proof_indexes(size, index)
            got = assemble_record_proof(size, index, {i: store.hashes[i] for i in wanted})
            assert got == store.prove_record(size, index)
        wanted = tree_proof_indexes(size, 1)
        proof = assemble_tree_proof(size, 1, {i: store.hashes[i] for i in wanted})
        assert proof == store.prove_tree(size, 1)
    with pytest.raises(TlogError, match="not provided"):
        assemble_tree_hash(13, {})


class AsyncStore:
    def __init__(self, store: MemoryHashStore) -> None:
        self.store = store
        self.calls = 0

    async def read_hashes(self, indexes: Sequence[int]) -> list[bytes]:
        self.calls += 1
        return self.store.read_hashes(indexes)


async def test_async_variants() -> None:
    store = store_64()
    reader = AsyncStore(store)
    assert await tlog.tree_hash_async(37, reader) == store.tree_hash(37)
    assert await tlog.prove_record_async(37, 20, reader) == store.prove_record(37, 20)
    assert await tlog.prove_tree_async(37, 20, reader) == store.prove_tree(37, 20)
    assert reader.calls == 3
    partial = MemoryHashStore()
    partial.append(leaves_64()[:10])
    new = await tlog.append_leaves_async(10, leaves_64()[10:64], AsyncStore(partial))
    partial.hashes.extend(h for _, h in new)
    assert partial.hashes == store.hashes


class BrokenReader:
    def __init__(self, answer: list[bytes]) -> None:
        self.answer = answer

    def read_hashes(self, indexes: Sequence[int]) -> list[bytes]:
        return self.answer


def test_misbehaving_stores_are_caught() -> None:
    with pytest.raises(TlogError, match="returned 0 hashes"):
        tree_hash(3, BrokenReader([]))
    with pytest.raises(TlogError, match="not 32 bytes"):
        tree_hash(1, BrokenReader([b"short"]))
    with pytest.raises(TlogError, match="no hash stored"):
        MemoryHashStore().read_hashes([0])


@pytest.mark.parametrize(
    "call",
    [
        lambda: record_proof_indexes(5, 5),
        lambda: record_proof_indexes(0, 0),
        lambda: record_proof_indexes(5, -1),
        lambda: tree_proof_indexes(3, 4),
        lambda: tree_hash_indexes(-1),
        lambda: stored_hash_index(0, True),
        lambda: stored_hash_index(0, 1 << 63),
        lambda: stored_hash_index(1 << 62, 0),
        lambda: store_64().prove_record(65, 0),
        lambda: store_64().tree_hash(65),
    ],
)
def test_invalid_arguments(call: object) -> None:
    with pytest.raises(TlogError):
        call()  # type: ignore[operator]


# --- Checkpoint signer -----------------------------------------------------------------------


def make_key(seed: int) -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(bytes([seed]) * 32)


def test_signer_basics() -> None:
    store = MemoryHashStore()
    signer = CheckpointSigner(make_key(1), ORIGIN)
    first = signer.sign(0, EMPTY_ROOT)
    store.append(leaves_64()[:5])
    second = signer.sign(5, store.tree_hash(), store.prove_tree(5, 0))
    assert signer.last == second
    checkpoint, names = open_checkpoint(second.note, [signer.vkey])
    assert (checkpoint.origin, checkpoint.size, checkpoint.root) == (ORIGIN, 5, store.tree_hash())
    assert names == [ORIGIN]
    again = signer.sign(5, store.tree_hash())
    assert again.note == second.note  # deterministic Ed25519
    with pytest.raises(CheckpointRefused, match="smaller"):
        signer.sign(0, EMPTY_ROOT)
    with pytest.raises(CheckpointRefused, match="different root"):
        signer.sign(5, store.tree_hash(4))
    with pytest.raises(CheckpointRefused, match="empty tree"):
        CheckpointSigner(make_key(1), ORIGIN).sign(0, b"\x00" * 32)
    with pytest.raises(CheckpointRefused):
        signer.sign(6, b"short", [])
    assert first.size == 0


def test_signer_loads_its_state_and_refuses_foreign_state() -> None:
    store = store_64()
    signer = CheckpointSigner(make_key(1), ORIGIN)
    last = signer.sign(10, store.tree_hash(10))
    reloaded = CheckpointSigner(make_key(1), ORIGIN, last=last.note)
    assert reloaded.last == last
    with pytest.raises(CheckpointRefused, match="smaller"):
        reloaded.sign(9, store.tree_hash(9))
    forged = sign_note(last.checkpoint.format(), ORIGIN, make_key(2))
    with pytest.raises(CheckpointRefused, match="does not verify"):
        CheckpointSigner(make_key(1), ORIGIN, last=forged)
    with pytest.raises(CheckpointRefused, match="does not verify"):
        CheckpointSigner(make_key(1), "other.test/log", last=last)
    other_log = sign_note(
        format_checkpoint("other.test/log", 3, store.tree_hash(3)), ORIGIN, make_key(1)
    )
    with pytest.raises(CheckpointRefused, match=r"is for 'other\.test/log'"):
        CheckpointSigner(make_key(1), ORIGIN, last=other_log)


class LogMachine(RuleBasedStateMachine):
    """Appends batches, signs checkpoints, proves inclusion and consistency between any signed
    checkpoints, reloads the signer's state, and tries forgeries the signer must refuse."""

    def __init__(self) -> None:
        super().__init__()
        self.key = make_key(7)
        self.store = MemoryHashStore()
        self.leaves: list[bytes] = []
        self.signer = CheckpointSigner(self.key, ORIGIN)
        self.signed: list[SignedCheckpoint] = []

    @rule(batch=st.lists(st.binary(max_size=6), min_size=1, max_size=12))
    def append(self, batch: list[bytes]) -> None:
        calls = self.store.read_calls
        self.store.append(batch)
        self.leaves.extend(batch)
        assert self.store.read_calls - calls <= 1

    @rule()
    def checkpoint(self) -> None:
        size = self.store.size
        last = self.signer.last
        proof = self.store.prove_tree(size, last.size) if last else []
        signed = self.signer.sign(size, self.store.tree_hash(), proof)
        checkpoint, _ = open_checkpoint(signed.note, [self.signer.vkey])
        assert checkpoint.size == size
        self.signed.append(signed)

    @precondition(lambda self: self.signer.last is not None)
    @rule()
    def reload_signer(self) -> None:
        assert self.signer.last is not None
        self.signer = CheckpointSigner(self.key, ORIGIN, last=self.signer.last.note)

    @precondition(lambda self: any(s.size for s in self.signed))
    @rule(data=st.data())
    def prove_inclusion(self, data: st.DataObject) -> None:
        signed = data.draw(st.sampled_from([s for s in self.signed if s.size]))
        index = data.draw(st.integers(0, signed.size - 1))
        proof = self.store.prove_record(signed.size, index)
        assert verify_inclusion(
            index, signed.size, leaf_hash(self.leaves[index]), proof, signed.root
        )
        assert not verify_inclusion(index, signed.size, leaf_hash(b"forged"), proof, signed.root)

    @precondition(lambda self: self.signed)
    @rule(data=st.data())
    def prove_consistency(self, data: st.DataObject) -> None:
        a = data.draw(st.sampled_from(self.signed))
        b = data.draw(st.sampled_from(self.signed))
        old, new = (a, b) if a.size <= b.size else (b, a)
        proof = self.store.prove_tree(new.size, old.size)
        assert verify_consistency(old.size, new.size, old.root, new.root, proof)

    @precondition(lambda self: self.signer.last is not None)
    @rule(kind=st.sampled_from(["smaller", "same-size", "wrong-root", "no-proof", "fork"]))
    def forge(self, kind: str) -> None:
        last = self.signer.last
        assert last is not None
        size = self.store.size
        if kind == "smaller":
            if last.size == 0:
                return
            attempt = (last.size - 1, self.store.tree_hash(last.size - 1), [])
        elif kind == "same-size":
            attempt = (last.size, leaf_hash(b"other"), [])
        elif kind in ("wrong-root", "no-proof"):
            # Any tree extends the empty one: from size 0 no root can be told wrong.
            if size == last.size or (kind == "wrong-root" and last.size == 0):
                return
            top = self.store.tree_hash()
            proof = self.store.prove_tree(size, last.size)
            if kind == "wrong-root":
                attempt = (size, bytes([top[0] ^ 1]) + top[1:], proof)
            else:
                attempt = (size, top, [] if proof else [top])
        else:
            # A history rewritten before the last signed size, with its own (valid) proof.
            if last.size == 0:
                return
            fork = MemoryHashStore()
            fork.append([*self.leaves[: last.size - 1], b"rewritten", b"more"])
            attempt = (fork.size, fork.tree_hash(), fork.prove_tree(fork.size, last.size))
        with pytest.raises(CheckpointRefused):
            self.signer.sign(*attempt)
        assert self.signer.last == last

    @invariant()
    def storage_matches_the_reference(self) -> None:
        assert len(self.store.hashes) == stored_hash_count(self.store.size)
        assert self.store.tree_hash() == mth(self.leaves)
        if self.signed:
            assert self.signer.last is not None
            assert self.signer.last.note == self.signed[-1].note


TestLogMachine = LogMachine.TestCase
TestLogMachine.settings = settings(
    max_examples=60, stateful_step_count=30, deadline=None, database=None
)
