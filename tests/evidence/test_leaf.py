"""The canonical leaf encoding: one encoding per leaf, strict decoding, person commitments."""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from portal.evidence.verify.leaf import (
    EVIDENCE_ADDED,
    LEAF_PREFIX,
    Leaf,
    LeafError,
    canonical_json,
    decode_leaf,
    encode_leaf,
    evidence_body,
    format_time,
    leaf_hash_hex,
    matches_person_commitment,
    metadata_digest,
    new_person_secret,
    person_commitment,
)

TIME = datetime(2026, 5, 1, 8, 30, 0, 123456, tzinfo=UTC)
HEX_A = "a" * 64
HEX_B = "b" * 64
HEX_C = "c" * 64


def evidence(**changes: Any) -> dict[str, Any]:
    body = {"sha256": HEX_A, "size": 52311, "metadata": HEX_B, "uploader": HEX_C}
    body.update(changes)
    return body


def raw(obj: dict[str, Any]) -> bytes:
    """Leaf bytes built by hand (canonical unless the caller makes them otherwise)."""
    return LEAF_PREFIX + json.dumps(
        obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False
    ).encode("utf-8")


def fields(**changes: Any) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "v": 1,
        "type": EVIDENCE_ADDED,
        "case": "SZ-2026-000123",
        "prev": None,
        "time": "2026-05-01T08:30:00.123456Z",
        "body": evidence(),
    }
    obj.update(changes)
    return obj


def test_golden_encoding() -> None:
    data = encode_leaf(EVIDENCE_ADDED, evidence(), case="SZ-2026-000123", prev=None, time=TIME)
    assert data == (
        b"jiefen-leaf/1\n"
        b'{"body":{"metadata":"' + HEX_B.encode() + b'","sha256":"' + HEX_A.encode() + b'",'
        b'"size":52311,"uploader":"' + HEX_C.encode() + b'"},"case":"SZ-2026-000123",'
        b'"prev":null,"time":"2026-05-01T08:30:00.123456Z","type":"evidence.added","v":1}'
    )
    assert data == raw(fields())
    leaf = decode_leaf(data)
    assert leaf == Leaf(EVIDENCE_ADDED, "SZ-2026-000123", None, TIME, evidence())
    assert leaf.sha256 == HEX_A
    assert leaf.size == 52311
    assert leaf.encode() == data
    assert leaf_hash_hex(data) == hashlib.sha256(b"\x00" + data).hexdigest()


def test_chain_and_other_types() -> None:
    first = encode_leaf(EVIDENCE_ADDED, evidence(), case="SZ-2026-000123", prev=None, time=TIME)
    second = encode_leaf(
        "case.transition",
        {"from": "review", "to": "mediation", "by": HEX_C, "reasons": ["ok", 3, None]},
        case="SZ-2026-000123",
        prev=leaf_hash_hex(first),
        time=TIME + timedelta(seconds=1),
    )
    assert decode_leaf(second).prev == leaf_hash_hex(first)
    note = encode_leaf("checkpoint.note", {"size": 3}, case=None, prev=None, time=TIME)
    assert decode_leaf(note).case is None
    assert decode_leaf(note).sha256 is None
    chinese = encode_leaf(
        "minutes", {"title": "调解笔录"}, case="AB-2026-000001", prev=None, time=TIME
    )
    assert "调解笔录".encode() in chinese  # written as itself, not \\u escapes
    assert decode_leaf(chinese).body == {"title": "调解笔录"}


def test_times_are_utc_microseconds() -> None:
    beijing = timezone(timedelta(hours=8))
    moment = datetime(2026, 5, 1, 16, 30, tzinfo=beijing)
    assert format_time(moment) == "2026-05-01T08:30:00.000000Z"
    with pytest.raises(LeafError, match="timezone-aware"):
        format_time(datetime(2026, 5, 1))


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"jiefen-leaf/2\n{}", "wrong first line"),
        (b"{}", "wrong first line"),
        (raw(fields()) + b"\n", "canonical"),
        (b"\xef\xbb\xbf" + raw(fields()), "wrong first line"),
        (LEAF_PREFIX + b"\xff", "UTF-8"),
        (LEAF_PREFIX + json.dumps(fields()).encode(), "canonical"),
        (LEAF_PREFIX + json.dumps(fields(), separators=(",", ":")).encode(), "canonical"),
        (
            raw(fields(type="minutes", body={"title": "调解"})).replace(
                "调解".encode(), b"\\u8c03\\u89e3"
            ),
            "canonical",
        ),
        (raw(fields()).replace(b'"v":1', b'"v":1.0'), "floats"),
        (raw(fields()).replace(b'"v":1', b'"v":1e0'), "floats"),
        (raw(fields(body={"n": 1})).replace(b'"n":1', b'"n":NaN'), "NaN"),
        (raw(fields()).replace(b'"v":1', b'"v":1,"v":1'), "duplicate"),
        (raw(fields(extra=1)), "unexpected"),
        (raw({k: v for k, v in fields().items() if k != "prev"}), "missing"),
        (raw(fields(v=2)), "version"),
        (raw(fields(v=True)), "version"),
        (b"[]".join([LEAF_PREFIX, b""]), "JSON object"),
        (raw(fields(type="Evidence.Added")), "dotted"),
        (raw(fields(type="evidence..added")), "dotted"),
        (raw(fields(type="evidence.added\n")), "dotted"),
        (raw(fields(type="")), "dotted"),
        (raw(fields(type="a" * 65)), "dotted"),
        (raw(fields(case="SZ 2026")), "case number"),
        (raw(fields(case=123)), "case number"),
        (raw(fields(prev=HEX_A.upper())), "hex"),
        (raw(fields(prev=HEX_A[:-1])), "hex"),
        (raw(fields(case=None, prev=HEX_A, body={"x": 1}, type="minutes")), "prev must be null"),
        (raw(fields(time="2026-05-01T08:30:00Z")), "time must look"),
        (raw(fields(time="2026-05-01T08:30:00.123Z")), "time must look"),
        (raw(fields(time="2026-05-01T16:30:00.123456+08:00")), "time must look"),
        (raw(fields(time="2026-02-30T08:30:00.123456Z")), "not a real date"),
        (raw(fields(body=[])), "body must be an object"),
        (raw(fields(body=evidence(sha256="x"))), "body.sha256"),
        (raw(fields(body=evidence(size=-1))), "body.size"),
        (raw(fields(body=evidence(size="5"))), "body.size"),
        (raw(fields(body={k: v for k, v in evidence().items() if k != "uploader"})), "uploader"),
        (raw(fields(body=evidence(flag=True))), "booleans"),
        (raw(fields(body=evidence(big=2**53))), "2\\*\\*53"),
        (raw(fields(body=evidence(**{"bad key": 1}))), "keys"),
        (raw(fields(body=evidence(deep=[[[[[[[[[1]]]]]]]]]))), "nested"),
    ],
)
def test_decode_is_strict(data: bytes, reason: str) -> None:
    with pytest.raises(LeafError, match=reason):
        decode_leaf(data)


def test_decode_rejects_huge_and_non_bytes() -> None:
    with pytest.raises(LeafError, match="at most"):
        decode_leaf(raw(fields(body=evidence(pad="x" * 70_000))))
    with pytest.raises(LeafError, match="bytes"):
        decode_leaf("jiefen-leaf/1\n{}")  # type: ignore[arg-type]
    with pytest.raises(LeafError, match="not valid JSON"):
        decode_leaf(LEAF_PREFIX + b"[" * 60_000)


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ({"x": 1.5}, "floats"),
        ({"x": True}, "booleans"),
        ({"x": b"bytes"}, "bytes values"),
        ({"x": {1: "a"}}, "keys"),
        ({"x": "\ud800"}, "Unicode"),
        ({"x": -(2**53)}, "2\\*\\*53"),
    ],
)
def test_encode_rejects_bad_values(body: dict[str, Any], reason: str) -> None:
    with pytest.raises(LeafError, match=reason):
        encode_leaf("minutes", body, case=None, prev=None, time=TIME)


def test_encode_checks_evidence_bodies() -> None:
    with pytest.raises(LeafError, match=r"body\.metadata"):
        encode_leaf(EVIDENCE_ADDED, evidence(metadata=None), case=None, prev=None, time=TIME)
    with pytest.raises(LeafError, match="prev must be null"):
        encode_leaf("minutes", {}, case=None, prev=HEX_A, time=TIME)
    body = evidence_body(sha256=HEX_A, size=1, metadata=HEX_B, uploader=HEX_C, note="扫描件")
    assert body["note"] == "扫描件"
    with pytest.raises(LeafError):
        evidence_body(sha256="nope", size=1, metadata=HEX_B, uploader=HEX_C)


def test_metadata_digest_is_canonical() -> None:
    a = metadata_digest({"name": "合同.pdf", "type": "application/pdf", "pages": 3})
    b = metadata_digest({"pages": 3, "type": "application/pdf", "name": "合同.pdf"})
    assert a == b
    expected = '{"name":"合同.pdf","pages":3,"type":"application/pdf"}'.encode()
    assert a == hashlib.sha256(expected).hexdigest()
    assert canonical_json({"b": [1, None], "a": "x"}) == b'{"a":"x","b":[1,null]}'


def test_person_commitments() -> None:
    secret = new_person_secret()
    assert len(secret) == 32
    commitment = person_commitment(secret, "user:42")
    assert commitment == hmac.new(secret, b"user:42", hashlib.sha256).hexdigest()
    assert commitment == person_commitment(secret, "user:42")
    assert commitment != person_commitment(new_person_secret(), "user:42")
    assert commitment != person_commitment(secret, "user:43")
    assert matches_person_commitment(secret, "user:42", commitment)
    assert not matches_person_commitment(secret, "user:43", commitment)
    assert not matches_person_commitment(secret, "user:42", "不是")
    with pytest.raises(LeafError, match="16 random bytes"):
        person_commitment(b"short", "user:42")
    with pytest.raises(LeafError, match="non-empty"):
        person_commitment(secret, "")


def test_deleting_the_secret_leaves_the_leaf_valid() -> None:
    secret = new_person_secret()
    data = encode_leaf(
        EVIDENCE_ADDED,
        evidence(uploader=person_commitment(secret, "user:42")),
        case="SZ-2026-000123",
        prev=None,
        time=TIME,
    )
    before = leaf_hash_hex(data)
    del secret  # the erasure: nothing in the leaf depends on still having it
    leaf = decode_leaf(data)
    assert leaf.encode() == data
    assert leaf_hash_hex(data) == before


json_values = st.recursive(
    st.none()
    | st.integers(-(2**53) + 1, 2**53 - 1)
    | st.text(st.characters(exclude_categories=["Cs"]), max_size=20),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.from_regex(r"[A-Za-z0-9_.-]{1,12}", fullmatch=True), children, max_size=4
        )
    ),
    max_leaves=12,
)


@settings(max_examples=200, deadline=None)
@given(
    body=st.dictionaries(st.from_regex(r"[a-z_]{1,10}", fullmatch=True), json_values, max_size=6),
    kind=st.from_regex(r"[a-z][a-z0-9_]{0,8}(\.[a-z][a-z0-9_]{0,8}){0,2}", fullmatch=True),
    micros=st.integers(0, 10**15),
)
def test_round_trip(body: dict[str, Any], kind: str, micros: int) -> None:
    if kind == EVIDENCE_ADDED:
        kind = "evidence.other"
    moment = datetime(2000, 1, 1, tzinfo=UTC) + timedelta(microseconds=micros)
    try:
        data = encode_leaf(kind, body, case="AB-1", prev=HEX_A, time=moment)
    except LeafError as exc:
        if "nested" not in str(exc):
            raise
        return
    leaf = decode_leaf(data)
    assert leaf.encode() == data
    assert leaf.time == moment
    assert leaf.body == json.loads(json.dumps(body))
