"""The numpy MinHash and banded index (portal.analytics.shingles, likeness.Bands) against
datasketch 2.0.0, which computed the fingerprints stored before them: same hash values for any
text, same stored bytes, same LSH candidates. datasketch is a test-only dependency; the portal
must not import it (it imports scipy, ~40 MB in every process)."""

from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from datasketch import LeanMinHash, MinHash, MinHashLSH
from datasketch.hashfunc import sha1_hash32 as ds_sha1_hash32
from datasketch.minhash import _fmix
from hypothesis import given, settings
from hypothesis import strategies as st

from portal.analytics import likeness, shingles
from portal.analytics.likeness import BANDS, ROWS, Bands
from tests.analytics.test_likeness_corpus import TEMPLATES, _details, _variant, corpus, independent

ROOT = Path(__file__).resolve().parents[2]
# What the stored fingerprints mean: datasketch's MinHash with these, whatever the module says.
NUM_PERM, SEED, SCHEME = 128, 1, "affine32"


def reference(text: str) -> np.ndarray:
    """What shingles.fingerprint was: datasketch's MinHash of the shingles' UTF-8 bytes."""
    m = MinHash(num_perm=NUM_PERM, seed=SEED, scheme=SCHEME)
    m.update_batch([s.encode("utf-8") for s in shingles.shingles(text)])
    return np.asarray(m.hashvalues)


def assert_same(text: str) -> None:
    ours, theirs = shingles.fingerprint(text), reference(text)
    assert ours.dtype == np.uint32 and theirs.dtype == np.uint32
    assert ours.shape == (shingles.NUM_PERM,)
    assert np.array_equal(ours, theirs), text[:80]
    assert shingles.to_bytes(ours) == bytes(theirs.astype("<u4").tobytes())


# -- the parts ----------------------------------------------------------------------------------


def test_permutations_are_datasketchs() -> None:
    a, b = shingles.permutations()
    assert (shingles.NUM_PERM, shingles.SEED, shingles.SCHEME) == (NUM_PERM, SEED, SCHEME)
    theirs = MinHash(num_perm=NUM_PERM, seed=SEED, scheme=SCHEME)
    assert np.array_equal(np.array([a, b]), theirs.permutations)
    assert a.dtype == b.dtype == np.uint32
    assert (a & 1).all()  # odd: bijections
    # A control: another seed draws other permutations.
    assert not np.array_equal(shingles.permutations(seed=2)[0], a)


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=64))
def test_sha1_hash32_and_fmix32_are_datasketchs(data: bytes) -> None:
    h = shingles.sha1_hash32(data)
    assert h == ds_sha1_hash32(data)
    values = np.array([h, h ^ 0xFFFF_FFFF, 0, 0xFFFF_FFFF], dtype=np.uint32)
    assert np.array_equal(shingles.fmix32(values), _fmix(values, 32))


# -- fingerprints -------------------------------------------------------------------------------

FIXED = [
    "",
    " ",
    "，。！？",  # punctuation only: no shingles
    "a",
    "中",
    "ab",
    "退款",
    "abc",
    "退款了",
    "abcd",
    "ＡＢＣ１２３",  # full-width: NFKC
    "Hello, World!",
    "我在某某电商平台购买了一部手机，收到后发现屏幕有划痕，要求退货退款被拒绝。",
    "Order #12345: refund of 3,000 yuan 未到账, seller says 'wait'.",
    "😀😀😀 emoji 表情 ☃",
    "\u0000\ud7ff\U0010ffff",
    "a" * 10_000,  # one shingle many times
]


@pytest.mark.parametrize("text", FIXED, ids=range(len(FIXED)))
def test_fixed_texts(text: str) -> None:
    assert_same(text)


def test_empty_text_is_all_max() -> None:
    assert (shingles.fingerprint("") == 0xFFFF_FFFF).all()
    assert (reference("") == 0xFFFF_FFFF).all()


def test_long_texts_across_chunks() -> None:
    rng = random.Random(7)
    chars = [chr(c) for c in range(0x4E00, 0x4E00 + 3000)]
    for size in (shingles.CHUNK - 1, shingles.CHUNK + 2, 3 * shingles.CHUNK + 5, 50_000):
        text = "".join(rng.choice(chars) for _ in range(size))
        assert len(shingles.shingles(text)) > min(size - 10, shingles.CHUNK) / 2
        assert_same(text)


def test_corpus_texts() -> None:
    """A few hundred realistic complaints (templates' variants and independent ones)."""
    data = corpus(11)
    assert len(data.filings) >= 300
    for filing in data.filings:
        assert_same(filing.text)


# Chinese (common and rare), Latin, digits, full-width forms, punctuation and spaces.
CHARS = st.one_of(
    st.characters(min_codepoint=0x4E00, max_codepoint=0x4E40),  # few: shingles repeat
    st.characters(min_codepoint=0x4E00, max_codepoint=0x9FFF),
    st.characters(min_codepoint=0x20, max_codepoint=0x7E),
    st.characters(min_codepoint=0xFF01, max_codepoint=0xFF5E),
    st.sampled_from("，。、；：？！“”（）《》 \n\t"),
    st.characters(codec="utf-8"),
)


@settings(max_examples=300, deadline=None)
@given(text=st.text(CHARS, max_size=300))
def test_any_text(text: str) -> None:
    assert_same(text)


# -- stored bytes -------------------------------------------------------------------------------


@settings(max_examples=100, deadline=None)
@given(text=st.text(CHARS, max_size=100))
def test_bytes_round_trip(text: str) -> None:
    values = shingles.fingerprint(text)
    data = shingles.to_bytes(values)
    assert len(data) == shingles.NUM_PERM * 4
    back = shingles.from_bytes(data)
    assert back.dtype == np.uint32 and np.array_equal(back, values)
    assert np.array_equal(likeness._values(data), values)


def legacy_from_bytes(data: bytes) -> np.ndarray:
    """What shingles.from_bytes gave (a datasketch MinHash), as likeness._values read it."""
    values = np.frombuffer(data, dtype="<u4").astype(np.uint64)
    m = MinHash(num_perm=NUM_PERM, seed=SEED, hashvalues=values, scheme=SCHEME)
    return np.asarray(m.hashvalues, dtype=np.uint32)


@settings(max_examples=100, deadline=None)
@given(count=st.integers(1, 200), seed=st.integers(0, 2**32 - 1))
def test_from_bytes_of_any_length_is_datasketchs(count: int, seed: int) -> None:
    data = np.random.default_rng(seed).integers(0, 256, count * 4, dtype=np.uint8).tobytes()
    assert np.array_equal(shingles.from_bytes(data), legacy_from_bytes(data))
    assert np.array_equal(likeness._values(data), legacy_from_bytes(data))


@pytest.mark.parametrize("data", [b"", b"\x01", b"\x01\x02\x03\x04\x05"])
def test_from_bytes_refuses_what_datasketch_refused(data: bytes) -> None:
    with pytest.raises(ValueError, match=r"num_perm must be positive|multiple of element size"):
        legacy_from_bytes(data)
    with pytest.raises(ValueError, match=r"empty fingerprint|multiple of element size"):
        shingles.from_bytes(data)
    with pytest.raises(ValueError, match=r"empty fingerprint|multiple of element size"):
        likeness._values(data)


# -- the banded index ---------------------------------------------------------------------------


def near_duplicates(seed: int, n: int) -> list[str]:
    """``n`` complaints, most of them variants of a few agents' templates."""
    rng = random.Random(seed)
    topics = list(TEMPLATES)
    copies = {topic: _details(rng, topic) for topic in topics}  # one agent per topic
    texts = []
    for _ in range(n):
        topic = rng.choice(topics)
        if rng.random() < 0.2:
            texts.append(independent(rng, topic))
        else:
            sentences = TEMPLATES[topic][0]
            texts.append(_variant(rng, topic, sentences, copies[topic], 0.02, 0.3)[0])
    return texts


def candidate_sets(
    stored: list[np.ndarray], queries: list[np.ndarray], bands: int, rows: int
) -> tuple[list[set[int]], list[set[int]]]:
    ours = Bands(bands, rows)
    theirs = MinHashLSH(num_perm=NUM_PERM, params=(bands, rows))
    for key, values in enumerate(stored):
        ours.insert(key, values)
        lean = LeanMinHash(seed=SEED, hashvalues=values, scheme=SCHEME)
        theirs.insert(key, lean, check_duplication=False)
    ours_found = [ours.query(q) for q in queries]
    theirs_found = [
        set(theirs.query(LeanMinHash(seed=SEED, hashvalues=q, scheme=SCHEME))) for q in queries
    ]
    return ours_found, theirs_found


@pytest.mark.parametrize("params", [(BANDS, ROWS), (16, 8), (32, 4), (2, 1)])
def test_band_candidates_are_minhashlshs(params: tuple[int, int]) -> None:
    texts = near_duplicates(20261203, 400)
    stored = [reference(t) for t in texts[:300]]
    queries = [shingles.fingerprint(t) for t in texts]  # the stored ones and 100 new
    ours, theirs = candidate_sets(stored, queries, *params)
    assert ours == theirs
    # Not trivially: candidates vary from none to many.
    sizes = [len(c) for c in ours[300:]]
    if params == (BANDS, ROWS):
        assert min(sizes) < max(sizes) and max(sizes) > 10


def test_band_candidates_with_many_collisions() -> None:
    """Values from a tiny alphabet: bands collide often, one band at a time."""
    rng = np.random.default_rng(3)
    stored = list(rng.integers(0, 3, (300, shingles.NUM_PERM), dtype=np.uint32))
    queries = list(rng.integers(0, 3, (100, shingles.NUM_PERM), dtype=np.uint32))
    ours, theirs = candidate_sets(stored, queries + stored[:20], BANDS, ROWS)
    assert ours == theirs
    assert any(0 < len(c) < 300 for c in ours)


def test_index_uses_the_bands() -> None:
    """LikenessIndex's candidates are the banded index's."""
    texts = near_duplicates(5, 120)
    index = likeness.LikenessIndex()
    theirs = MinHashLSH(num_perm=NUM_PERM, params=(BANDS, ROWS))
    for key, text in enumerate(texts[:100], start=1):
        values = likeness.values_of(text)
        index.add(key, 1, values)
        lean = LeanMinHash(seed=SEED, hashvalues=reference(text), scheme=SCHEME)
        theirs.insert(index._row_of[key], lean, check_duplication=False)
    for text in texts[100:]:
        values = likeness.values_of(text)
        lean = LeanMinHash(seed=SEED, hashvalues=values, scheme=SCHEME)
        assert index._bands.query(values) == set(theirs.query(lean))


def test_bands_refuse_what_minhashlsh_refused() -> None:
    with pytest.raises(ValueError, match="do not fit"):
        Bands(20, 7)  # 140 > 128
    with pytest.raises(ValueError, match="do not fit"):
        Bands(1, 2)
    with pytest.raises(ValueError, match="expected 128 hash values"):
        Bands().query(np.zeros(64, dtype=np.uint32))


# -- the point of it ----------------------------------------------------------------------------


def test_the_portal_imports_neither_datasketch_nor_scipy() -> None:
    code = "import sys, portal.app\nprint(sorted({m.split('.')[0] for m in sys.modules}))\n"
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
        check=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    loaded = done.stdout
    assert "'portal'" in loaded
    assert "'datasketch'" not in loaded
    assert "'scipy'" not in loaded
