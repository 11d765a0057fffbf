"""Character shingles and MinHash fingerprints of free text (Chinese needs no word segmentation).

Shared by template-complaint detection (``likeness``) and the similar-case library (``library``),
so that both measure "alike" the same way.

The fingerprint is the one datasketch 2.0.0 computes for ``MinHash(num_perm=128, seed=1,
scheme="affine32")`` fed the shingles' UTF-8 bytes (what this module used before), so that
stored fingerprints keep their meaning; it is computed here with numpy alone because importing
datasketch imports scipy (~43 MB of RSS in every process). The two are compared on many texts
by tests/analytics/test_minhash_crosscheck.py. The computation, as in datasketch:

- each shingle's 32-bit hash is the first 4 bytes of its SHA-1, little-endian (``sha1_hash32``),
  mixed once by the MurmurHash3 32-bit finalizer (``fmix32``);
- permutation k maps a hash h to ``a[k] * h + b[k] mod 2**32`` (``a[k]`` odd), with ``a`` and
  ``b`` drawn from ``numpy.random.RandomState(SEED)``: ``a = 2 * randint(0, 2**31) + 1``, then
  ``b = randint(0, 2**32)``, ``NUM_PERM`` of each, as uint32;
- hash value k is the least of permutation k over the shingles, ``2**32 - 1`` when there are
  none (facts without text).
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Iterable

import numpy as np
import numpy.typing as npt

SHINGLE = 3  # characters per shingle
NUM_PERM = 128  # MinHash permutations: standard error of a Jaccard estimate ≈ 1/sqrt(128) ≈ 0.09
SEED = 1  # fixed: stored fingerprints stay comparable across processes and releases
SCHEME = "affine32"  # datasketch 2's default, named so stored values keep their meaning
EMPTY = np.uint32(0xFFFF_FFFF)  # every hash value of a text without shingles
CHUNK = 4096  # shingles permuted at a time (4096 x 128 x 4 bytes = 2 MB of scratch)

Fingerprint = npt.NDArray[np.uint32]  # NUM_PERM hash values

# Whitespace and punctuation carry no meaning for likeness (full- and half-width alike).
_NOISE = re.compile(r"[\s\W_]+", re.UNICODE)


def permutations(num_perm: int = NUM_PERM, seed: int = SEED) -> tuple[Fingerprint, Fingerprint]:
    """The affine permutations' parameters (a, b), drawn as datasketch 2.0.0 draws them."""
    gen = np.random.RandomState(seed)
    a = gen.randint(0, 1 << 31, num_perm, dtype=np.uint32) * np.uint32(2) + np.uint32(1)
    b = gen.randint(0, 1 << 32, num_perm, dtype=np.uint32)
    a.flags.writeable = b.flags.writeable = False
    return a, b


_A, _B = permutations()  # computed once (microseconds), read-only


def sha1_hash32(data: bytes) -> int:
    """datasketch.hashfunc.sha1_hash32: the first 4 bytes of the SHA-1, little-endian."""
    return int.from_bytes(hashlib.sha1(data, usedforsecurity=False).digest()[:4], "little")


def fmix32(h: Fingerprint) -> Fingerprint:
    """The MurmurHash3 32-bit finalizer (a bijection), element-wise, wrapping modulo 2**32."""
    h = h ^ (h >> np.uint32(16))
    h = h * np.uint32(0x85EBCA6B)
    h = h ^ (h >> np.uint32(13))
    h = h * np.uint32(0xC2B2AE35)
    return h ^ (h >> np.uint32(16))


def normalise(text: str) -> str:
    """NFKC (full-width to half-width), lower case, without punctuation and spaces."""
    return _NOISE.sub("", unicodedata.normalize("NFKC", text).lower())


def shingles(text: str, k: int = SHINGLE) -> set[str]:
    """The set of ``k``-character substrings of the normalised text (the whole text if shorter)."""
    clean = normalise(text)
    if len(clean) <= k:
        return {clean} if clean else set()
    return {clean[i : i + k] for i in range(len(clean) - k + 1)}


def minhash(items: Iterable[bytes]) -> Fingerprint:
    """The MinHash (``NUM_PERM`` uint32 hash values) of a set of byte strings."""
    digests = b"".join(hashlib.sha1(item, usedforsecurity=False).digest()[:4] for item in items)
    hashed = fmix32(np.frombuffer(digests, dtype="<u4").astype(np.uint32).reshape(-1, 1))
    values = np.full(NUM_PERM, EMPTY, dtype=np.uint32)
    for start in range(0, len(hashed), CHUNK):
        np.minimum(values, (hashed[start : start + CHUNK] * _A + _B).min(axis=0), out=values)
    return values


def fingerprint(text: str) -> Fingerprint:
    """The MinHash of the text's shingles."""
    return minhash(s.encode("utf-8") for s in shingles(text))


def to_bytes(values: Fingerprint) -> bytes:
    """The fingerprint as stored: its hash values, little-endian uint32."""
    return bytes(np.asarray(values).astype("<u4").tobytes())


def from_bytes(data: bytes) -> Fingerprint:
    """The hash values of a stored fingerprint (``to_bytes``), of whatever length; a ValueError
    for no bytes or a length that is not a multiple of 4 (as datasketch's MinHash gave)."""
    values = np.frombuffer(data, dtype="<u4").astype(np.uint32)
    if not len(values):
        raise ValueError("an empty fingerprint")
    return values
