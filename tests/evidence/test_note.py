"""C2SP signed notes and checkpoints: known answers from Go's sumdb/note and the C2SP spec,
strict parsing, and refusals with clear errors."""

from __future__ import annotations

import base64

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from portal.evidence.verify.note import (
    Checkpoint,
    CheckpointError,
    InvalidSignatureError,
    MalformedKeyError,
    MalformedNoteError,
    NoteError,
    UnverifiedNoteError,
    Verifier,
    format_checkpoint,
    key_id,
    make_vkey,
    open_checkpoint,
    open_note,
    parse_checkpoint,
    parse_note,
    parse_vkey,
    sign_note,
)

# golang.org/x/mod/sumdb/note's tests and package documentation.
PETER_SKEY = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
PETER_VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
ENOCH_VKEY = "EnochRoot+af0cfe78+ATtqJ7zOtqQtYqOo0CpvDXNlMhV3HeJDpjrASKGLWdop"
GO_TEXT = (
    "If you think cryptography is the answer to your problem,\n"
    "then you don't know what your problem is.\n"
)
PETER_SIG = (
    "— PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXg"
    "KvqfqdngotpRZb6KE6RyyBwJnAM=\n"
)
ENOCH_SIG = (
    "— EnochRoot rwz+eBzmZa0SO3NbfRGzPCpDckykFXSdeX+MNtCOXm2/5n2tiOHp+vAF1aGrQ5ovTG01oOTGwnW"
    "Lox33WWd1RvMc+QQ=\n"
)
# The example of c2sp.org/signed-note.
SPEC_VKEY = "example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k"
SPEC_NOTE = (
    "This is an example message.\n\n— example.com/foo Uw2QOkn8srV1yJGh2VYRlL1Tnagv1YEq6TfXppzi2"
    "ONncAlTgK7Ztg1ERYNZXsYjOBH3mFXmRKuwHjG1Yu72IneyaQM=\n"
)
# The example of c2sp.org/tlog-checkpoint (text only).
SPEC_CHECKPOINT = (
    "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
)

ORIGIN = "jiefen.test/evidence-log"
ROOT = bytes(range(32))


def peter_key() -> Ed25519PrivateKey:
    raw = base64.b64decode(PETER_SKEY.split("+", 4)[4])
    assert raw[0] == 1
    return Ed25519PrivateKey.from_private_bytes(raw[1:])


def our_key(seed: int = 1) -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(bytes([seed]) * 32)


# --- Known answers ---------------------------------------------------------------------------


def test_go_known_answer() -> None:
    key = peter_key()
    assert make_vkey("PeterNeumann", key.public_key()) == PETER_VKEY
    assert key_id("PeterNeumann", key.public_key()) == 0xC74F20A3
    signed = sign_note(GO_TEXT, "PeterNeumann", key)
    assert signed == GO_TEXT + "\n" + PETER_SIG
    assert open_note(signed, [PETER_VKEY]) == (GO_TEXT, ["PeterNeumann"])
    assert open_note(signed.encode(), PETER_VKEY) == (GO_TEXT, ["PeterNeumann"])


def test_two_signatures() -> None:
    signed = GO_TEXT + "\n" + PETER_SIG + ENOCH_SIG
    assert open_note(signed, [PETER_VKEY, ENOCH_VKEY]) == (GO_TEXT, ["PeterNeumann", "EnochRoot"])
    assert open_note(signed, [ENOCH_VKEY])[1] == ["EnochRoot"]
    text, signatures = parse_note(signed)
    assert text == GO_TEXT
    assert [(s.name, s.key_id) for s in signatures] == [
        ("PeterNeumann", 0xC74F20A3),
        ("EnochRoot", 0xAF0CFE78),
    ]


def test_spec_example() -> None:
    assert open_note(SPEC_NOTE, [SPEC_VKEY]) == (
        "This is an example message.\n",
        ["example.com/foo"],
    )


def test_vkeys() -> None:
    verifier = parse_vkey(PETER_VKEY)
    assert verifier.name == "PeterNeumann"
    assert verifier.key_id == 0xC74F20A3
    assert verifier.vkey == PETER_VKEY
    assert verifier.fingerprint.replace(" ", "").startswith("C74F20A3")
    assert len(verifier.fingerprint.replace(" ", "")) == 64
    assert parse_vkey(PETER_VKEY.replace("c74f20a3", "C74F20A3")) == verifier
    # A key whose base64 contains '+', so splitting must stop at the second '+'.
    assert parse_vkey("TEST+7997405c+AQcC+FTVKf0jlTdHDY3rbevmnKxxPjigCXlVtGe6RIr6").name == "TEST"


def test_vkey_manglings_are_refused() -> None:
    """Every proper substring and every one-character change of a vkey (as Go's tests do)."""
    for i in range(len(PETER_VKEY) + 1):
        for j in range(i + 1, len(PETER_VKEY) + 1):
            if (i, j) != (0, len(PETER_VKEY)):
                with pytest.raises(MalformedKeyError):
                    parse_vkey(PETER_VKEY[i:j])
    for i, ch in enumerate(PETER_VKEY):
        with pytest.raises(MalformedKeyError):
            parse_vkey(PETER_VKEY[:i] + chr(ord(ch) + 1) + PETER_VKEY[i + 1 :])


@pytest.mark.parametrize(
    "vkey",
    [
        "",
        "PeterNeumann",
        "Peter Neumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
        "PeterNeumann+cc469956+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TWBADKEY==",
        "PeterNeumann+c74f20a3+AhpC2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
        "PeterNeumann+c74f20a+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
        "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW\n",
    ],
)
def test_bad_vkeys(vkey: str) -> None:
    with pytest.raises(MalformedKeyError):
        parse_vkey(vkey)


# --- Refusals --------------------------------------------------------------------------------


def signed_by_us(text: str = "hello\nworld\n") -> str:
    return sign_note(text, ORIGIN, our_key())


def vkey() -> str:
    return make_vkey(ORIGIN, our_key().public_key())


def test_bad_signature() -> None:
    text, sig64 = signed_by_us().rsplit(" ", 1)
    raw = bytearray(base64.b64decode(sig64))
    raw[10] ^= 1
    tampered = text + " " + base64.b64encode(bytes(raw)).decode() + "\n"
    with pytest.raises(InvalidSignatureError, match="does not match the text"):
        open_note(tampered, [vkey()])


def test_altered_body() -> None:
    tampered = signed_by_us().replace("world", "World")
    with pytest.raises(InvalidSignatureError, match="altered"):
        open_note(tampered, [vkey()])


def test_unknown_key() -> None:
    with pytest.raises(UnverifiedNoteError, match="no signature by a trusted key"):
        open_note(signed_by_us(), [PETER_VKEY])
    # Same name, other key: the ID differs, so the signature is ignored, then nothing verifies.
    impostor = sign_note("hello\nworld\n", ORIGIN, our_key(2))
    with pytest.raises(UnverifiedNoteError, match=ORIGIN):
        open_note(impostor, [vkey()])
    with pytest.raises(UnverifiedNoteError, match="trusted: none"):
        open_note(impostor, [])


def test_a_failing_known_signature_refuses_the_whole_note() -> None:
    good = signed_by_us()
    other = make_vkey("other.test/key", our_key(3).public_key())
    forged_line = (
        "— other.test/key "
        + base64.b64encode(
            key_id("other.test/key", our_key(3).public_key()).to_bytes(4, "big") + b"\x00" * 64
        ).decode()
    )
    with pytest.raises(InvalidSignatureError):
        open_note(good + forged_line + "\n", [vkey(), other])
    # Unknown extra signatures are ignored.
    assert open_note(good + forged_line + "\n", [vkey()])[1] == [ORIGIN]


@pytest.mark.parametrize(
    ("mangle", "reason"),
    [
        (lambda s: s[:-1], "end with a newline"),
        (lambda s: s.replace("\n", "\r\n"), "CR"),
        (lambda s: s.replace("hello", "hel\tlo"), "U\\+0009"),
        (lambda s: s.replace("\n\n", "\n"), "no blank line"),
        (lambda s: s + "\n", "no signatures"),
        (lambda s: s.replace("— ", "-- "), "em dash"),
        (lambda s: s.replace("— ", "—"), "em dash"),
        (lambda s: s.replace("— ", "—  "), "key name"),
        (lambda s: s.replace("=\n", "\n"), "base64"),
        (lambda s: s.replace(f"{ORIGIN} ", "bad+name "), "invalid key name"),
        (lambda s: s + s.split("\n\n")[1], "same key"),
        (lambda s: s.split("\n\n")[0] + "\n\n", "no signatures"),
        (lambda s: s.split("\n\n")[0] + "\n\n— a AAAA\n", "too short"),
        (lambda s: s + "— x AAAAAAA=\n" * 100, "more than 100"),
    ],
)
def test_malformed_notes(mangle: object, reason: str) -> None:
    with pytest.raises(MalformedNoteError, match=reason):
        open_note(mangle(signed_by_us()), [vkey()])  # type: ignore[operator]


def test_malformed_bytes() -> None:
    with pytest.raises(MalformedNoteError, match="UTF-8"):
        open_note(b"hello \xff\n\n" + PETER_SIG.encode(), [PETER_VKEY])
    with pytest.raises(MalformedNoteError, match="at most"):
        open_note(b"x" * (2 << 20), [PETER_VKEY])
    with pytest.raises(MalformedNoteError, match="text"):
        open_note(42, [PETER_VKEY])  # type: ignore[arg-type]
    with pytest.raises(MalformedKeyError):
        open_note(SPEC_NOTE, ["not a key"])


def test_sign_refuses_bad_text_and_names() -> None:
    key = our_key()
    with pytest.raises(MalformedNoteError, match="end with a newline"):
        sign_note("no newline", ORIGIN, key)
    with pytest.raises(MalformedNoteError, match="CR"):
        sign_note("line\r\n", ORIGIN, key)
    with pytest.raises(MalformedKeyError, match="invalid key name"):
        sign_note("text\n", "two words", key)
    with pytest.raises(MalformedKeyError, match="invalid key name"):
        sign_note("text\n", "a+b", key)
    with pytest.raises(MalformedKeyError, match="invalid key name"):
        sign_note("text\n", "", key)


def test_text_with_blank_lines() -> None:
    text = "first\n\nthird\n\n"
    signed = sign_note(text, ORIGIN, our_key())
    assert open_note(signed, [vkey()]) == (text, [ORIGIN])


def test_errors_are_value_errors() -> None:
    assert issubclass(NoteError, ValueError)
    for cls in (MalformedNoteError, InvalidSignatureError, UnverifiedNoteError, CheckpointError):
        assert issubclass(cls, NoteError)


# --- Checkpoints -----------------------------------------------------------------------------


def test_checkpoint_round_trip() -> None:
    text = format_checkpoint(ORIGIN, 1234, ROOT)
    assert text == f"{ORIGIN}\n1234\n{base64.b64encode(ROOT).decode()}\n"
    assert parse_checkpoint(text) == Checkpoint(ORIGIN, 1234, ROOT)
    with_ext = format_checkpoint(ORIGIN, 0, ROOT, ["ext one", "— two"])
    assert parse_checkpoint(with_ext).extensions == ("ext one", "— two")
    assert parse_checkpoint(with_ext).format() == with_ext
    signed = sign_note(with_ext, ORIGIN, our_key())
    checkpoint, names = open_checkpoint(signed, [vkey()])
    assert checkpoint.size == 0
    assert names == [ORIGIN]


def test_spec_checkpoint() -> None:
    checkpoint = parse_checkpoint(SPEC_CHECKPOINT)
    assert checkpoint.origin == "example.com/behind-the-sofa"
    assert checkpoint.size == 20852163
    assert len(checkpoint.root) == 32


GOOD_ROOT = base64.b64encode(ROOT).decode()
assert GOOD_ROOT.endswith("8=")  # so "9=" decodes to the same bytes, non-canonically


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        (f"{ORIGIN}\n12\n{GOOD_ROOT}", "end with a newline"),
        (f"{ORIGIN}\n12\n", "at least three"),
        (f"{ORIGIN}\n012\n{GOOD_ROOT}\n", "decimal"),
        (f"{ORIGIN}\n+12\n{GOOD_ROOT}\n", "decimal"),
        (f"{ORIGIN}\n-1\n{GOOD_ROOT}\n", "decimal"),
        (f"{ORIGIN}\n 12\n{GOOD_ROOT}\n", "decimal"),
        (f"{ORIGIN}\n１２\n{GOOD_ROOT}\n", "decimal"),
        (f"{ORIGIN}\n{1 << 63}\n{GOOD_ROOT}\n", "decimal"),
        (f"{ORIGIN}\n12\n{GOOD_ROOT[:-4]}\n", "32 bytes"),
        (f"{ORIGIN}\n12\n{GOOD_ROOT[:-1]}\n", "base64"),
        (f"{ORIGIN}\n12\n{GOOD_ROOT[:-2]}9=\n", "canonical base64"),
        (f"{ORIGIN}\n12\n{GOOD_ROOT}\n\nextension\n", "no empty lines"),
        (f"\n12\n{GOOD_ROOT}\n", "no empty lines"),
        (f"{ORIGIN}\r\n12\n{GOOD_ROOT}\n", "CR"),
    ],
)
def test_malformed_checkpoints(text: str, reason: str) -> None:
    with pytest.raises(CheckpointError, match=reason):
        parse_checkpoint(text)


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        (("with space", 1, ROOT), "origin"),
        (("a+b", 1, ROOT), "origin"),
        (("", 1, ROOT), "origin"),
        ((ORIGIN, -1, ROOT), "tree size"),
        ((ORIGIN, True, ROOT), "tree size"),
        ((ORIGIN, 1, ROOT[:31]), "32 bytes"),
        ((ORIGIN, 1, ROOT, ["two\nlines"]), "single lines"),
        ((ORIGIN, 1, ROOT, [""]), "single lines"),
        ((ORIGIN, 1, ROOT, "ext"), "list of lines"),
    ],
)
def test_format_checkpoint_refuses(args: tuple[object, ...], reason: str) -> None:
    with pytest.raises(CheckpointError, match=reason):
        format_checkpoint(*args)  # type: ignore[arg-type]


def test_verifier_object_can_be_passed() -> None:
    verifier = Verifier.from_public_key(ORIGIN, our_key().public_key())
    assert open_note(signed_by_us(), [verifier])[1] == [ORIGIN]
    assert open_note(signed_by_us(), verifier)[1] == [ORIGIN]  # type: ignore[arg-type]
