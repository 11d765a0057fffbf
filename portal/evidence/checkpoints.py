"""Signing the evidence log's checkpoints, never two that contradict each other.

c2sp.org/tlog-checkpoint: "A log MUST NOT sign any checkpoint which is inconsistent with any
checkpoint it previously signed." :class:`CheckpointSigner` holds the log's Ed25519 key and the
last checkpoint it signed, and signs a new one only when

- the size is larger and a consistency proof (RFC 9162) from the last one verifies, or
- the size and root are those of the last one (signing it again gives the same note: Ed25519
  signatures are deterministic).

A smaller size, the same size with another root, an unproven larger tree or another origin is
refused with :class:`CheckpointRefused`. Since every signed checkpoint is consistent with the one
before, all of them are consistent with each other.

The "last signed" state is injected: the database layer loads the last signed note and passes it
as ``last`` (it is re-verified with the signer's own key), calls :meth:`CheckpointSigner.sign`
while holding a lock on that row (``SELECT ... FOR UPDATE``; one signer at a time), and stores
``signer.last`` in the same transaction as whatever the checkpoint is for.
"""

from __future__ import annotations

import hmac
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from portal.evidence.verify.note import (
    Checkpoint,
    NoteError,
    Verifier,
    format_checkpoint,
    open_checkpoint,
    sign_note,
)
from portal.evidence.verify.proofs import EMPTY_ROOT, verify_consistency

__all__ = ["CheckpointRefused", "CheckpointSigner", "SignedCheckpoint"]


class CheckpointRefused(Exception):
    """The signer will not sign this checkpoint; the message says why."""


@dataclass(frozen=True)
class SignedCheckpoint:
    """A checkpoint and its signed note (what is stored and published)."""

    checkpoint: Checkpoint
    note: str

    @property
    def size(self) -> int:
        return self.checkpoint.size

    @property
    def root(self) -> bytes:
        return self.checkpoint.root


class CheckpointSigner:
    """Signs checkpoints for one log (``origin``), remembering the last one it signed."""

    def __init__(
        self,
        private_key: Ed25519PrivateKey,
        origin: str,
        *,
        last: SignedCheckpoint | str | None = None,
    ) -> None:
        self._key = private_key
        self.origin = origin
        self.verifier = Verifier.from_public_key(origin, private_key.public_key())
        self._last: SignedCheckpoint | None = None
        if last is not None:
            self._last = self._load(last.note if isinstance(last, SignedCheckpoint) else last)

    @property
    def vkey(self) -> str:
        """The verifier key to publish."""
        return self.verifier.vkey

    @property
    def last(self) -> SignedCheckpoint | None:
        """The last checkpoint signed (or loaded), to be stored by the caller."""
        return self._last

    def _load(self, note: str) -> SignedCheckpoint:
        try:
            checkpoint, _ = open_checkpoint(note, [self.verifier])
        except NoteError as exc:
            raise CheckpointRefused(f"the stored last checkpoint does not verify: {exc}") from None
        if checkpoint.origin != self.origin:
            raise CheckpointRefused(
                f"the stored last checkpoint is for {checkpoint.origin!r}, not {self.origin!r}"
            )
        return SignedCheckpoint(checkpoint, note)

    def sign(
        self,
        size: int,
        root: bytes,
        proof: Sequence[bytes] = (),
        extensions: Sequence[str] = (),
    ) -> SignedCheckpoint:
        """Sign the checkpoint for the tree of ``size`` leaves with root ``root``.

        ``proof`` is the consistency proof from the last signed checkpoint to this tree
        (``prove_tree(size, last.size, ...)``); it is not needed for the first checkpoint or
        for the same tree again.
        """
        try:
            text = format_checkpoint(self.origin, size, root, extensions)
        except NoteError as exc:
            raise CheckpointRefused(str(exc)) from None
        last = self._last
        if size == 0 and not hmac.compare_digest(root, EMPTY_ROOT):
            raise CheckpointRefused("the root of the empty tree is SHA-256 of nothing")
        if last is not None:
            if size < last.size:
                raise CheckpointRefused(
                    f"the log already signed a tree of {last.size} leaves; "
                    f"it will not sign a smaller one ({size})"
                )
            if size == last.size:
                if not hmac.compare_digest(root, last.root):
                    raise CheckpointRefused(
                        f"the log already signed a different root for {size} leaves"
                    )
            elif not verify_consistency(last.size, size, last.root, root, proof):
                raise CheckpointRefused(
                    f"the tree of {size} leaves is not proven to extend the signed tree of "
                    f"{last.size} leaves: the consistency proof does not verify"
                )
        checkpoint = Checkpoint(self.origin, size, root, tuple(extensions))
        signed = SignedCheckpoint(checkpoint, sign_note(text, self.origin, self._key))
        self._last = signed
        return signed
