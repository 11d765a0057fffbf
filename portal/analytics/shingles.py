"""Character shingles and MinHash fingerprints of free text (Chinese needs no word segmentation).

Shared by template-complaint detection (``likeness``) and the similar-case library (``library``),
so that both measure "alike" the same way.
"""

from __future__ import annotations

import re
import unicodedata

from datasketch import MinHash

SHINGLE = 3  # characters per shingle
NUM_PERM = 128  # MinHash permutations: standard error of a Jaccard estimate ≈ 1/sqrt(128) ≈ 0.09
SEED = 1  # fixed: stored fingerprints stay comparable across processes and releases
SCHEME = "affine32"  # datasketch 2's default, named so stored values keep their meaning

# Whitespace and punctuation carry no meaning for likeness (full- and half-width alike).
_NOISE = re.compile(r"[\s\W_]+", re.UNICODE)


def normalise(text: str) -> str:
    """NFKC (full-width to half-width), lower case, without punctuation and spaces."""
    return _NOISE.sub("", unicodedata.normalize("NFKC", text).lower())


def shingles(text: str, k: int = SHINGLE) -> set[str]:
    """The set of ``k``-character substrings of the normalised text (the whole text if shorter)."""
    clean = normalise(text)
    if len(clean) <= k:
        return {clean} if clean else set()
    return {clean[i : i + k] for i in range(len(clean) - k + 1)}


def fingerprint(text: str) -> MinHash:
    """The MinHash of the text's shingles."""
    m = MinHash(num_perm=NUM_PERM, seed=SEED, scheme=SCHEME)
    m.update_batch([s.encode("utf-8") for s in shingles(text)])
    return m


def to_bytes(m: MinHash) -> bytes:
    """The fingerprint as stored: its hash values (below 2**32 in this scheme), little-endian."""
    return bytes(m.hashvalues.astype("<u4").tobytes())


def from_bytes(data: bytes) -> MinHash:
    import numpy as np

    values = np.frombuffer(data, dtype="<u4").astype(np.uint64)
    return MinHash(num_perm=NUM_PERM, seed=SEED, hashvalues=values, scheme=SCHEME)
