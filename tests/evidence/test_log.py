"""The evidence log in the database (both backends): sequencing, proofs, checkpoints, receipts,
case chains, erasure, and full verification finding each kind of tampering."""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import os
from typing import Any

import pytest
from sqlalchemy import delete, select, update

from portal.cases.models import Case, CaseEvent, CaseMaterial
from portal.evidence import log, tlog
from portal.evidence.checkpoints import CheckpointRefused
from portal.evidence.integrity import verify_log
from portal.evidence.models import LogCheckpoint, LogHash, LogHead, LogLeaf
from portal.evidence.service import forget_person
from portal.evidence.verify.leaf import decode_leaf, leaf_hash_hex
from portal.evidence.verify.note import open_checkpoint
from portal.evidence.verify.proofs import verify_consistency, verify_inclusion
from portal.evidence.verify.receipt import verify_receipt
from portal.policy import Role
from tests.evidence.tsa_server import LocalTSA, local_tsa_fixture  # noqa: F401 (local_tsa)
from tests.factories import make_case, make_committee, make_firm, make_user, verify_phone

PHONES = itertools.count(1)


def _state(app: Any) -> Any:
    return app.starlette.state


async def _numbered_case(app: Any, status: str = "assigned") -> Case:
    committee = await make_committee(app)
    await make_user(app, Role.COMMITTEE_ADMIN, committee=committee)
    await make_user(app, Role.MEDIATOR, committee=committee)
    firm = await make_firm(app)
    person = await make_user(app, Role.CONSUMER, phone=f"1370000{next(PHONES):04d}")
    await verify_phone(app, person)
    case: Case = await make_case(app, person, firm, status=status)
    return case


async def test_concurrent_appends_share_commits_and_match_an_independent_tree(app: Any) -> None:
    state = _state(app)
    writer = log.LogWriter(state.db, limit=64)
    indexes = await asyncio.gather(*(writer.append("minutes", {"n": n}) for n in range(300)))
    assert sorted(indexes) == list(range(300))
    memory = tlog.MemoryHashStore()
    async with state.db() as db:
        leaves = (await db.scalars(select(LogLeaf).order_by(LogLeaf.seq))).all()
        memory.append(bytes(leaf.data) for leaf in leaves)
        size, root = await log.head_of(db)
        assert size == 300 and root == memory.tree_hash()
        reader = log.DbHashReader(db)
        for index in (0, 1, 127, 128, 255, 299):
            proof = await tlog.prove_record_async(size, index, reader)
            assert proof == memory.prove_record(size, index)
            assert verify_inclusion(index, size, bytes(leaves[index].hash), proof, root)
        for old in (1, 64, 100, 299):
            proof = await tlog.prove_tree_async(size, old, reader)
            assert verify_consistency(old, size, memory.tree_hash(old), root, proof)


async def test_a_case_is_a_chain_and_every_material_has_a_receipt(app: Any) -> None:
    state = _state(app)
    case = await _numbered_case(app)
    async with state.db() as db:
        await log.integrate_all(db)
        leaves = (
            await db.scalars(select(LogLeaf).where(LogLeaf.case_id == case.id).order_by(LogLeaf.id))
        ).all()
        types = [leaf.type for leaf in leaves]
        # submit, its two materials, accept, assign
        assert types == [
            "case.transition",
            "evidence.added",
            "evidence.added",
            "case.transition",
            "case.transition",
        ]
        prev = None
        for leaf in leaves:
            decoded = decode_leaf(bytes(leaf.data))
            assert decoded.case == case.number and decoded.prev == prev
            assert leaf.seq is not None
            prev = leaf_hash_hex(bytes(leaf.data))
        # No personal data in any leaf.
        for leaf in leaves:
            text = bytes(leaf.data).decode()
            assert "张三" not in text and "identity.pdf" not in text
        materials = (
            await db.scalars(select(CaseMaterial).where(CaseMaterial.case_id == case.id))
        ).all()
        for material in materials:
            assert material.leaf_id is not None
            receipt = await log.make_leaf_receipt(db, material.leaf_id, state.log_key)
            content = state.blobs.read_all(material.sha256)
            report = verify_receipt(receipt, content, [state.log_key.vkey])
            assert report.ok and report.trusted, report.verdict()
            other = verify_receipt(receipt, content + b"x", [state.log_key.vkey])
            assert not other.ok and other.check("file").ok is False


async def test_a_receipt_carries_the_authoritys_timestamp(app: Any, local_tsa: LocalTSA) -> None:
    state = _state(app)
    writer = log.LogWriter(state.db)
    index = await writer.append("minutes", {"n": 1})
    tsa = log.TsaConfig(local_tsa.url, [local_tsa.root_ca_pem])
    async with state.db() as db:
        leaf = await db.scalar(select(LogLeaf).where(LogLeaf.seq == index))
        assert leaf is not None
        receipt = await log.make_leaf_receipt(db, leaf.id, state.log_key, tsa)
        checkpoint = await db.scalar(select(LogCheckpoint).order_by(LogCheckpoint.id.desc()))
    assert checkpoint is not None and checkpoint.tsa_token and checkpoint.tsa_time
    assert "timestamp" in receipt
    report = verify_receipt(
        receipt, None, [state.log_key.vkey], tsa_roots_pem=[local_tsa.root_ca_pem]
    )
    assert report.check("timestamp").ok is True, report.verdict()


async def test_a_dead_authority_is_recorded_and_the_log_goes_on(app: Any) -> None:
    state = _state(app)
    await log.LogWriter(state.db).append("minutes", {"n": 1})
    tsa = log.TsaConfig("http://127.0.0.1:9/tsr", [], timeout=2)
    async with state.db() as db:
        checkpoint = await log.checkpoint_now(db, state.log_key, tsa)
    assert checkpoint is not None and checkpoint.tsa_token is None
    assert "127.0.0.1:9" in checkpoint.tsa_error


async def test_checkpoints_are_consistent_and_a_rewritten_log_is_not_signed(app: Any) -> None:
    state = _state(app)
    writer = log.LogWriter(state.db)
    key = state.log_key
    for n in range(5):
        await writer.append("minutes", {"n": n})
    async with state.db() as db:
        first = await log.sign_checkpoint(db, key)
        assert first is not None and first.size == 5
        again = await log.sign_checkpoint(db, key)
        assert again is not None and again.id == first.id  # nothing new: no new checkpoint
    for n in range(5, 9):
        await writer.append("minutes", {"n": n})
    async with state.db() as db:
        second = await log.sign_checkpoint(db, key)
        assert second is not None and second.size == 9
        for cp in (first, second):
            parsed, _ = open_checkpoint(cp.note, [key.verifier])
            assert parsed.size == cp.size
        # Someone rewrites history: the hash of leaves 0-7 changes, and the log moves on.
        await db.execute(
            update(LogHash)
            .where(LogHash.position == tlog.stored_hash_index(3, 0))
            .values(hash=os.urandom(32))
        )
        await db.commit()
    await writer.append("minutes", {"n": 9})
    async with state.db() as db:
        with pytest.raises(CheckpointRefused):
            await log.sign_checkpoint(db, key)


async def test_full_verification_passes_and_survives_erasure(app: Any) -> None:
    state = _state(app)
    case = await _numbered_case(app)
    async with state.db() as db:
        await log.checkpoint_now(db, state.log_key)
        result = await verify_log(db, state.blobs, state.log_key)
        assert result.ok, result.problem
        assert result.leaves == 5 and result.files == 2 and result.checkpoints == 1
        material = await db.scalar(
            select(CaseMaterial).where(CaseMaterial.case_id == case.id).limit(1)
        )
        assert material is not None and material.uploaded_by_id is not None and material.leaf_id
        receipt_before = await log.make_leaf_receipt(db, material.leaf_id, state.log_key)
        assert await forget_person(db, material.uploaded_by_id)
        await db.commit()
        result = await verify_log(db, state.blobs, state.log_key)
        assert result.ok, result.problem
        receipt_after = await log.make_leaf_receipt(db, material.leaf_id, state.log_key)
        assert receipt_after["leaf"] == receipt_before["leaf"]
        assert verify_receipt(receipt_after, None, [state.log_key.vkey]).ok


async def _verified_case(app: Any) -> tuple[Any, Case]:
    state = _state(app)
    case = await _numbered_case(app)
    async with state.db() as db:
        await log.checkpoint_now(db, state.log_key)
        assert (await verify_log(db, state.blobs, state.log_key, record=False)).ok
    return state, case


# Two worker processes, blocks of two leaves: the case's chain, the tree and the checkpoint
# all cross blocks, so what the workers find must be joined to find the same first problem.
PARALLEL = {"workers": 2, "block": 2}


async def _problem(state: Any) -> str:
    async with state.db() as db:
        result = await verify_log(db, state.blobs, state.log_key)
        parallel = await verify_log(db, state.blobs, state.log_key, record=False, **PARALLEL)
    assert not result.ok
    assert parallel.problem == result.problem
    return result.problem


async def test_worker_processes_verify_the_same(app: Any) -> None:
    state, _case = await _verified_case(app)
    async with state.db() as db:
        for kind in range(3):  # more leaves after the case's, and a checkpoint inside a block
            await log.LogWriter(state.db).append("minutes", {"n": kind})
        await log.checkpoint_now(db, state.log_key)
        one = await verify_log(db, state.blobs, state.log_key, record=False)
        two = await verify_log(db, state.blobs, state.log_key, record=False, **PARALLEL)
    assert one.ok and two.ok, (one.problem, two.problem)
    assert (two.leaves, two.files, two.checkpoints) == (one.leaves, one.files, one.checkpoints)
    assert (one.leaves, one.checkpoints) == (8, 2)
    with pytest.raises(ValueError, match="power of two"):
        async with state.db() as db:
            await verify_log(db, state.blobs, state.log_key, workers=2, block=3)


def test_the_fast_canonical_json_is_the_json_modules() -> None:
    from portal.evidence import integrity

    def slow(value: Any) -> bytes:
        encoded = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return encoded.encode("utf-8")

    text = "".join(chr(c) for c in range(0x110000) if not 0xD800 <= c <= 0xDFFF)
    for start in range(0, len(text), 4096):
        part = text[start : start + 4096]
        assert integrity._json({"t": part, "k": [part]}) == slow({"t": part, "k": [part]})
    for value in (0, -1, 2**63 - 1, -(2**63), 2**64 - 1, 2**64, -(2**64), True, False, None):
        assert integrity._json({"b": value, "a": [value]}) == slow({"b": value, "a": [value]})


async def test_a_crashed_worker_leaves_the_check_to_this_process(
    app: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from portal.evidence import integrity

    state, _case = await _verified_case(app)
    monkeypatch.setattr(integrity, "_worker_start", os.abort)  # each worker dies at start
    async with state.db() as db:
        result = await verify_log(db, state.blobs, state.log_key, record=False, **PARALLEL)
    assert result.ok, result.problem
    assert (result.leaves, result.checkpoints, result.files) == (5, 1, 2)


async def test_a_missing_hash_joining_blocks_is_found(app: Any) -> None:
    state, _case = await _verified_case(app)
    position = tlog.stored_hash_index(2, 0)
    async with state.db() as db:
        await db.execute(delete(LogHash).where(LogHash.position == position))
        await db.commit()
    problem = await _problem(state)
    assert problem.startswith("leaf 3:") and f"position {position}" in problem


async def _unsequence(state: Any, seq: int) -> None:
    async with state.db() as db:
        leaf = await db.scalar(select(LogLeaf).where(LogLeaf.seq == seq))
        assert leaf is not None
        leaf.seq = None
        await db.commit()


async def test_a_missing_leaf_is_found(app: Any) -> None:
    state, _case = await _verified_case(app)
    await _unsequence(state, 3)
    assert await _problem(state) == "leaf 3 is missing: the next stored leaf is 4"


async def test_a_changed_leaf_before_a_missing_one_comes_first(app: Any) -> None:
    state, _case = await _verified_case(app)
    async with state.db() as db:
        leaf = await db.scalar(select(LogLeaf).where(LogLeaf.seq == 1))
        assert leaf is not None
        leaf.data = bytes(leaf.data) + b" "
        await db.commit()
    await _unsequence(state, 3)
    assert (await _problem(state)).startswith("leaf 1")


async def test_a_changed_hash_joining_blocks_is_found(app: Any) -> None:
    state, _case = await _verified_case(app)
    position = tlog.stored_hash_index(2, 0)  # leaves 0-3: above the blocks of two
    async with state.db() as db:
        stored = await db.get(LogHash, position)
        assert stored is not None
        stored.hash = bytes(32)
        await db.commit()
    problem = await _problem(state)
    assert problem.startswith("leaf 3:") and f"position {position}" in problem


async def test_a_changed_row_is_found_and_named(app: Any) -> None:
    state, case = await _verified_case(app)
    async with state.db() as db:
        material = await db.scalar(
            select(CaseMaterial).where(CaseMaterial.case_id == case.id).order_by(CaseMaterial.id)
        )
        assert material is not None
        material.filename = "forged.pdf"
        await db.commit()
    problem = await _problem(state)
    assert f"evidence item {material.id}" in problem and case.number in problem
    assert "metadata" in problem


async def test_a_changed_timeline_event_is_found(app: Any) -> None:
    state, case = await _verified_case(app)
    async with state.db() as db:
        event = await db.scalar(
            select(CaseEvent).where(CaseEvent.case_id == case.id, CaseEvent.to_status == "accepted")
        )
        assert event is not None
        event.to_status = "rejected"
        await db.commit()
    problem = await _problem(state)
    assert f"timeline event {event.id}" in problem and "to" in problem


async def test_a_flipped_byte_in_a_file_is_found(app: Any) -> None:
    state, case = await _verified_case(app)
    async with state.db() as db:
        material = await db.scalar(
            select(CaseMaterial).where(CaseMaterial.case_id == case.id).order_by(CaseMaterial.id)
        )
    assert material is not None
    path = state.blobs.path(material.sha256)
    raw = bytearray(path.read_bytes())
    raw[-20] ^= 0x01
    path.write_bytes(bytes(raw))
    problem = await _problem(state)
    assert f"evidence item {material.id}" in problem
    assert "file" in problem


async def test_reordered_leaves_are_found(app: Any) -> None:
    state, _case = await _verified_case(app)
    async with state.db() as db:
        one = await db.scalar(select(LogLeaf).where(LogLeaf.seq == 1))
        two = await db.scalar(select(LogLeaf).where(LogLeaf.seq == 2))
        assert one is not None and two is not None
        one.seq = None
        await db.flush()
        two.seq = 1
        await db.flush()
        one.seq = 2
        await db.commit()
    problem = await _problem(state)
    assert problem.startswith("leaf 1")


async def test_a_truncated_log_is_found(app: Any) -> None:
    state, _case = await _verified_case(app)
    async with state.db() as db:
        await db.execute(update(CaseMaterial).values(leaf_id=None))
        await db.execute(delete(LogLeaf).where(LogLeaf.seq >= 3))
        await db.execute(delete(LogHash).where(LogHash.position >= tlog.stored_hash_index(0, 3)))
        head = await db.get(LogHead, log.HEAD_ID)
        assert head is not None
        head.size = 3
        head.root = await tlog.tree_hash_async(3, log.DbHashReader(db))
        await db.commit()
    problem = await _problem(state)
    # The materials lost their leaves' link first; with it restored, the cut is named.
    assert "leaf 1" in problem or "cut short" in problem


async def test_a_replaced_checkpoint_is_found(app: Any) -> None:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    state, _case = await _verified_case(app)
    forger = log.LogKey(state.log_key.origin, Ed25519PrivateKey.generate())
    async with state.db() as db:
        checkpoint = await db.scalar(select(LogCheckpoint))
        assert checkpoint is not None
        from portal.evidence.checkpoints import CheckpointSigner

        signed = CheckpointSigner(forger.private_key, forger.origin).sign(
            checkpoint.size, bytes(checkpoint.root)
        )
        checkpoint.note = signed.note
        await db.commit()
    problem = await _problem(state)
    assert f"checkpoint {checkpoint.id}" in problem and "signature" in problem


async def test_a_changed_leaf_is_found(app: Any) -> None:
    state, _case = await _verified_case(app)
    async with state.db() as db:
        leaf = await db.scalar(select(LogLeaf).where(LogLeaf.seq == 3))
        assert leaf is not None
        leaf.data = bytes(leaf.data).replace(b'"accepted"', b'"rejected"')
        await db.commit()
    problem = await _problem(state)
    assert problem.startswith("leaf 3")


async def test_consistency_proofs_between_any_two_checkpoints(app: Any, client: Any) -> None:
    state = _state(app)
    writer = log.LogWriter(state.db)
    sizes = []
    for batch in (3, 1, 8, 5):
        await asyncio.gather(*(writer.append("minutes", {"n": n}) for n in range(batch)))
        async with state.db() as db:
            checkpoint = await log.sign_checkpoint(db, state.log_key)
            assert checkpoint is not None
            sizes.append(checkpoint.size)
    for old in sizes:
        for new in sizes:
            if old > new:
                continue
            answer = await client.get(f"/evidence/consistency?from={old}&to={new}")
            assert answer.status_code == 200
            body = answer.json()
            first, _ = open_checkpoint(body["from"]["checkpoint"], [state.log_key.verifier])
            second, _ = open_checkpoint(body["to"]["checkpoint"], [state.log_key.verifier])
            proof = [base64.b64decode(h) for h in body["proof"]]
            assert verify_consistency(old, new, first.root, second.root, proof)
    assert (await client.get(f"/evidence/consistency?from={sizes[1]}&to=2")).status_code == 400
    assert (await client.get("/evidence/consistency?from=x&to=1")).status_code == 400


async def test_concurrent_writers_of_one_case_keep_one_chain(app: Any) -> None:
    """Transactions whose first write is the case's leaf still read its previous leaf under a
    lock: eight at once give a chain, not a fork (found by the benchmark on SQLite)."""
    state = _state(app)
    case = await _numbered_case(app, status="submitted")

    async def write(n: int) -> None:
        async with state.db() as db:
            await log.stage_leaf(db, "minutes", {"n": n}, case_id=case.id, case_number=case.number)
            await db.commit()

    await asyncio.gather(*(write(n) for n in range(8)))
    async with state.db() as db:
        await log.integrate_all(db)
        leaves = (
            await db.scalars(
                select(LogLeaf).where(LogLeaf.case_id == case.id).order_by(LogLeaf.seq)
            )
        ).all()
        prevs = [decode_leaf(bytes(leaf.data)).prev for leaf in leaves]
        hashes = [None] + [leaf_hash_hex(bytes(leaf.data)) for leaf in leaves[:-1]]
        assert prevs == hashes and len(leaves) == 11  # submit, 2 materials, 8 minutes
        result = await verify_log(db, state.blobs, state.log_key, record=False)
        assert result.ok, result.problem
