"""Verify RFC 3161 timestamp tokens offline, with the standard library and ``cryptography`` only.

A timestamp token is a CMS ``ContentInfo`` holding ``SignedData`` whose encapsulated content is a
DER ``TSTInfo`` (RFC 3161 §2.4.2). No ASN.1 library is available to the court clerk's verifier,
so this module carries a small, strict DER reader: definite lengths only, low tag numbers only,
every length checked against its parent before it is used. Anything it cannot read is reported
as ``malformed DER at offset N`` (an offset into the bytes given), never as an ``IndexError``.

Checks, in order: the envelope (``TimeStampResp`` or ``ContentInfo``, id-signedData,
id-ct-TSTInfo); the TSTInfo fields; the signer's certificate (by issuer and serial number or by
subject key identifier, among the token's certificates and the extra ones given); the signed
attributes (content type, message digest of the TSTInfo); the signature over the signed
attributes (RSA PKCS#1 v1.5, RSA-PSS, ECDSA); the ESS signing-certificate(-v2)
attribute when present; the certificate's critical ``timeStamping`` extended key usage, its key
usage and its validity at ``genTime``; the message imprint against the message; and, when
trusted roots are given, the certificate chain at ``genTime`` (``cryptography``'s path builder,
with a policy that asks for ``timeStamping`` instead of a TLS purpose). Revocation is not
checked: this runs offline.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID
from cryptography.x509.verification import (
    Criticality,
    ExtensionPolicy,
    Policy,
    PolicyBuilder,
    Store,
    VerificationError,
)

__all__ = ["TimestampError", "TimestampResult", "verify_timestamp"]


class TimestampError(Exception):
    """The token is not a valid timestamp for the message; the message says why in plain English."""


@dataclass(frozen=True)
class TimestampResult:
    """What a verified timestamp token attests."""

    time: datetime
    """``genTime`` of the token, timezone-aware UTC."""
    tsa_name: str
    """Subject of the TSA's signing certificate, as an RFC 4514 string."""
    serial: int
    """Serial number the TSA gave the token."""
    hash_algorithm: str
    """Hash algorithm of the message imprint, e.g. ``"sha256"``."""
    chained_to_trusted_root: bool | None
    """True when the signing certificate chains to a trusted root; None when none were given."""
    certificate_fingerprint: str
    """SHA-256 of the TSA's signing certificate (DER), lowercase hex."""


# --- Object identifiers ---------------------------------------------------------------------

OID_SIGNED_DATA = "1.2.840.113549.1.7.2"
OID_TST_INFO = "1.2.840.113549.1.9.16.1.4"
OID_ATTR_CONTENT_TYPE = "1.2.840.113549.1.9.3"
OID_ATTR_MESSAGE_DIGEST = "1.2.840.113549.1.9.4"
OID_ATTR_SIGNING_CERTIFICATE = "1.2.840.113549.1.9.16.2.12"
OID_ATTR_SIGNING_CERTIFICATE_V2 = "1.2.840.113549.1.9.16.2.47"

OID_SHA1 = "1.3.14.3.2.26"
OID_SHA256 = "2.16.840.1.101.3.4.2.1"
OID_SHA384 = "2.16.840.1.101.3.4.2.2"
OID_SHA512 = "2.16.840.1.101.3.4.2.3"

OID_RSA_ENCRYPTION = "1.2.840.113549.1.1.1"
OID_RSASSA_PSS = "1.2.840.113549.1.1.10"
OID_MGF1 = "1.2.840.113549.1.1.8"
OID_EC_PUBLIC_KEY = "1.2.840.10045.2.1"


@dataclass(frozen=True)
class _Digest:
    name: str  # as reported in TimestampResult.hash_algorithm
    label: str  # for people
    hashlib_name: str
    factory: Callable[[], hashes.HashAlgorithm]

    def of(self, data: bytes) -> bytes:
        return hashlib.new(self.hashlib_name, data).digest()


_DIGESTS: dict[str, _Digest] = {
    OID_SHA256: _Digest("sha256", "SHA-256", "sha256", hashes.SHA256),
    OID_SHA384: _Digest("sha384", "SHA-384", "sha384", hashes.SHA384),
    OID_SHA512: _Digest("sha512", "SHA-512", "sha512", hashes.SHA512),
    "2.16.840.1.101.3.4.2.8": _Digest("sha3-256", "SHA3-256", "sha3_256", hashes.SHA3_256),
    "2.16.840.1.101.3.4.2.9": _Digest("sha3-384", "SHA3-384", "sha3_384", hashes.SHA3_384),
    "2.16.840.1.101.3.4.2.10": _Digest("sha3-512", "SHA3-512", "sha3_512", hashes.SHA3_512),
}
# Only for identifying a certificate in an ESS signing-certificate attribute, never for proof.
_SHA1_FOR_CERT_ID = _Digest("sha1", "SHA-1", "sha1", hashes.SHA1)
_WEAK_DIGESTS = {
    OID_SHA1: "SHA-1",
    "1.2.840.113549.2.5": "MD5",
    "1.2.840.113549.2.2": "MD2",
    "2.16.840.1.101.3.4.2.4": "SHA-224",
}
_RSA_PKCS1 = {
    "1.2.840.113549.1.1.11": OID_SHA256,
    "1.2.840.113549.1.1.12": OID_SHA384,
    "1.2.840.113549.1.1.13": OID_SHA512,
    "2.16.840.1.101.3.4.3.14": "2.16.840.1.101.3.4.2.8",
    "2.16.840.1.101.3.4.3.15": "2.16.840.1.101.3.4.2.9",
    "2.16.840.1.101.3.4.3.16": "2.16.840.1.101.3.4.2.10",
}
_ECDSA = {
    "1.2.840.10045.4.3.2": OID_SHA256,
    "1.2.840.10045.4.3.3": OID_SHA384,
    "1.2.840.10045.4.3.4": OID_SHA512,
    "2.16.840.1.101.3.4.3.10": "2.16.840.1.101.3.4.2.8",
    "2.16.840.1.101.3.4.3.11": "2.16.840.1.101.3.4.2.9",
    "2.16.840.1.101.3.4.3.12": "2.16.840.1.101.3.4.2.10",
}
_WEAK_SIGNATURES = {
    "1.2.840.113549.1.1.5": "SHA-1 with RSA",
    "1.2.840.113549.1.1.4": "MD5 with RSA",
    "1.2.840.10045.4.1": "ECDSA with SHA-1",
    "1.2.840.10040.4.3": "DSA with SHA-1",
}
_NAME_ATTRIBUTES = {
    "2.5.4.3": "CN",
    "2.5.4.6": "C",
    "2.5.4.7": "L",
    "2.5.4.8": "ST",
    "2.5.4.10": "O",
    "2.5.4.11": "OU",
}
_PKI_STATUS = {
    0: "granted",
    1: "granted with modifications",
    2: "rejection",
    3: "waiting",
    4: "revocation warning",
    5: "revocation notification",
}
_PKI_FAILURE = {
    0: "badAlg (unrecognized or unsupported algorithm)",
    2: "badRequest (transaction not permitted or supported)",
    5: "badDataFormat (the data submitted has the wrong format)",
    14: "timeNotAvailable (the TSA's time source is not available)",
    15: "unacceptedPolicy (the requested TSA policy is not supported)",
    16: "unacceptedExtension (the requested extension is not supported)",
    17: "addInfoNotAvailable (the additional information requested is not available)",
    25: "systemFailure (the request cannot be handled due to system failure)",
}

# --- A small DER reader ---------------------------------------------------------------------

INTEGER = 0x02
BIT_STRING = 0x03
OCTET_STRING = 0x04
NULL = 0x05
OBJECT_IDENTIFIER = 0x06
BOOLEAN = 0x01
GENERALIZED_TIME = 0x18
SEQUENCE = 0x30
SET = 0x31

_TAG_NAMES = {
    BOOLEAN: "BOOLEAN",
    INTEGER: "INTEGER",
    BIT_STRING: "BIT STRING",
    OCTET_STRING: "OCTET STRING",
    NULL: "NULL",
    OBJECT_IDENTIFIER: "OBJECT IDENTIFIER",
    0x0C: "UTF8String",
    0x13: "PrintableString",
    0x17: "UTCTime",
    GENERALIZED_TIME: "GeneralizedTime",
    SEQUENCE: "SEQUENCE",
    SET: "SET",
}
_MAX_LENGTH_OCTETS = 4


def _tag_name(tag: int) -> str:
    if tag in _TAG_NAMES:
        return _TAG_NAMES[tag]
    if tag & 0xC0 == 0x80:
        return f"[{tag & 0x1F}]"
    return f"tag 0x{tag:02x}"


def _malformed(offset: int, reason: str) -> TimestampError:
    return TimestampError(f"malformed DER at offset {offset}: {reason}")


@dataclass(frozen=True)
class _Element:
    """One DER element of ``buf``: identifier octet at ``offset``, content ``buf[start:end]``."""

    buf: bytes
    offset: int
    tag: int
    start: int
    end: int

    @property
    def content(self) -> bytes:
        return self.buf[self.start : self.end]

    @property
    def encoded(self) -> bytes:
        return self.buf[self.offset : self.end]

    def children(self) -> list[_Element]:
        if not self.tag & 0x20:
            raise _malformed(self.offset, f"{_tag_name(self.tag)} is not a constructed element")
        return _read_all(self.buf, self.start, self.end)


def _read(buf: bytes, pos: int, end: int) -> _Element:
    if pos >= end:
        raise _malformed(pos, "the data ends where an element should start")
    tag = buf[pos]
    if tag & 0x1F == 0x1F:
        raise _malformed(pos, "high tag numbers are not used in timestamp tokens")
    if pos + 1 >= end:
        raise _malformed(pos + 1, "the data ends inside an element header")
    first = buf[pos + 1]
    start = pos + 2
    if first < 0x80:
        length = first
    elif first == 0x80:
        raise _malformed(pos + 1, "indefinite length (BER) is not allowed in DER")
    else:
        count = first & 0x7F
        if count > _MAX_LENGTH_OCTETS:
            raise _malformed(pos + 1, f"a length of {count} octets is too large")
        if start + count > end:
            raise _malformed(pos + 1, "the data ends inside an element header")
        length = int.from_bytes(buf[start : start + count], "big")
        if buf[start] == 0 or length < 0x80:
            raise _malformed(pos + 1, "the length is not minimally encoded")
        start += count
    if length > end - start:
        raise _malformed(
            pos,
            f"{_tag_name(tag)} claims {length} bytes but only {end - start} remain (truncated?)",
        )
    return _Element(buf, pos, tag, start, start + length)


def _read_all(buf: bytes, start: int, end: int) -> list[_Element]:
    elements = []
    pos = start
    while pos < end:
        element = _read(buf, pos, end)
        elements.append(element)
        pos = element.end
    return elements


def _read_single(buf: bytes, start: int, end: int, what: str) -> _Element:
    element = _read(buf, start, end)
    if element.end != end:
        raise _malformed(element.end, f"unexpected data after the {what}")
    return element


def _expect(element: _Element, tag: int, what: str) -> _Element:
    if element.tag != tag:
        raise _malformed(
            element.offset,
            f"expected {_tag_name(tag)} for the {what}, found {_tag_name(element.tag)}",
        )
    return element


class _Fields:
    """Walks the fields of a SEQUENCE in order, with optional fields recognised by tag."""

    def __init__(self, element: _Element, what: str) -> None:
        self._element = element
        self._what = what
        self._items = element.children()
        self._index = 0

    def next(self, tag: int, what: str) -> _Element:
        if self._index >= len(self._items):
            raise _malformed(self._element.end, f"the {self._what} ends before its {what}")
        element = _expect(self._items[self._index], tag, what)
        self._index += 1
        return element

    def any(self, what: str) -> _Element:
        if self._index >= len(self._items):
            raise _malformed(self._element.end, f"the {self._what} ends before its {what}")
        element = self._items[self._index]
        self._index += 1
        return element

    def optional(self, tag: int) -> _Element | None:
        if self._index < len(self._items) and self._items[self._index].tag == tag:
            self._index += 1
            return self._items[self._index - 1]
        return None

    def rest(self) -> list[_Element]:
        items = self._items[self._index :]
        self._index = len(self._items)
        return items

    def done(self) -> None:
        if self._index < len(self._items):
            extra = self._items[self._index]
            raise _malformed(
                extra.offset, f"unexpected {_tag_name(extra.tag)} at the end of the {self._what}"
            )


def _integer(element: _Element, what: str) -> int:
    _expect(element, INTEGER, what)
    if element.start == element.end:
        raise _malformed(element.offset, f"the {what} is an empty INTEGER")
    return int.from_bytes(element.content, "big", signed=True)


def _oid(element: _Element, what: str) -> str:
    _expect(element, OBJECT_IDENTIFIER, what)
    content = element.content
    if not content or content[-1] & 0x80:
        raise _malformed(element.offset, f"the {what} is not a valid OBJECT IDENTIFIER")
    arcs: list[int] = []
    value = 0
    starting = True
    for byte in content:
        if starting and byte == 0x80:
            raise _malformed(element.offset, f"the {what} is not minimally encoded")
        value = (value << 7) | (byte & 0x7F)
        starting = not byte & 0x80
        if starting:
            arcs.append(value)
            value = 0
    first = min(arcs[0] // 40, 2)
    return ".".join(str(arc) for arc in [first, arcs[0] - 40 * first, *arcs[1:]])


def _octets(element: _Element, what: str) -> bytes:
    return _expect(element, OCTET_STRING, what).content


def _boolean(element: _Element, what: str) -> bool:
    _expect(element, BOOLEAN, what)
    if element.end - element.start != 1 or element.content[0] not in (0x00, 0xFF):
        raise _malformed(element.offset, f"the {what} is not a DER BOOLEAN")
    return element.content[0] == 0xFF


_GENERALIZED_TIME = re.compile(rb"(\d{4})(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})(?:\.(\d{1,9}))?Z")


def _generalized_time(element: _Element, what: str) -> datetime:
    _expect(element, GENERALIZED_TIME, what)
    match = _GENERALIZED_TIME.fullmatch(element.content)
    if match is None:
        raise _malformed(
            element.offset, f"the {what} is not a UTC GeneralizedTime (YYYYMMDDhhmmss[.f]Z)"
        )
    year, month, day, hour, minute, second = (int(group) for group in match.groups()[:6])
    micros = int((match.group(7) or b"")[:6].ljust(6, b"0"))
    try:
        return datetime(year, month, day, hour, minute, second, micros, tzinfo=UTC)
    except ValueError:
        raise _malformed(element.offset, f"the {what} is not a real date and time") from None


def _algorithm(element: _Element, what: str) -> tuple[str, _Element | None]:
    """An AlgorithmIdentifier: its OID and parameters (None when absent)."""
    fields = _Fields(_expect(element, SEQUENCE, what), what)
    oid = _oid(fields.next(OBJECT_IDENTIFIER, "algorithm"), f"{what} algorithm")
    parameters = fields.rest()
    if len(parameters) > 1:
        raise _malformed(parameters[1].offset, f"the {what} has more than one parameter")
    return oid, parameters[0] if parameters else None


def _digest(element: _Element, what: str, *, allow_sha1_for_cert_id: bool = False) -> _Digest:
    oid, parameters = _algorithm(element, what)
    if parameters is not None and (parameters.tag != NULL or parameters.start != parameters.end):
        raise _malformed(parameters.offset, f"the {what} has unexpected parameters")
    if oid == OID_SHA1 and allow_sha1_for_cert_id:
        return _SHA1_FOR_CERT_ID
    return _digest_by_oid(oid, what)


def _digest_by_oid(oid: str, what: str) -> _Digest:
    if oid in _WEAK_DIGESTS:
        raise TimestampError(
            f"the {what} is {_WEAK_DIGESTS[oid]}, which is too weak to prove anything any more; "
            "a timestamp must use SHA-256 or stronger"
        )
    if oid not in _DIGESTS:
        raise TimestampError(f"the {what} is not a supported hash algorithm (OID {oid})")
    return _DIGESTS[oid]


def _describe_name(name: _Element) -> str:
    """Best-effort text for a DER Name, for error messages only."""
    parts: list[str] = []
    try:
        for rdn in reversed(name.children()):
            for attribute in rdn.children():
                type_element, value = attribute.children()[:2]
                label = _NAME_ATTRIBUTES.get(_oid(type_element, "name attribute"))
                text = value.content.decode("utf-16-be" if value.tag == 0x1E else "utf-8")
                parts.append(f"{label or _oid(type_element, 'name attribute')}={text}")
    except (TimestampError, ValueError):
        return "(unreadable name)"
    return ",".join(parts) or "(empty name)"


# --- Token structure ------------------------------------------------------------------------


@dataclass(frozen=True)
class _TSTInfo:
    encoded: bytes
    imprint_algorithm: _Element
    hashed_message: bytes
    serial: int
    gen_time: datetime
    nonce: int | None


@dataclass(frozen=True)
class _SignerInfo:
    issuer: _Element | None
    serial: int | None
    key_identifier: bytes | None
    digest: _Digest
    signed_attributes: _Element
    signature_algorithm: str
    signature_parameters: _Element | None
    signature: bytes


class _NotGrantedError(TimestampError):
    """A TimeStampResp whose status is neither granted nor granted with modifications."""

    def __init__(self, description: str) -> None:
        super().__init__(f"the time-stamping authority did not grant a timestamp: {description}")
        self.description = description


def _content_info(token: bytes) -> _Element:
    """The ContentInfo of a TimeStampToken, or the token inside a granted TimeStampResp."""
    outer = _expect(_read_single(token, 0, len(token), "token"), SEQUENCE, "timestamp token")
    items = outer.children()
    if not items or items[0].tag != SEQUENCE:
        return outer
    # TimeStampResp ::= SEQUENCE { status PKIStatusInfo, timeStampToken ContentInfo OPTIONAL }
    fields = _Fields(outer, "timestamp response")
    status_info = _Fields(fields.next(SEQUENCE, "status"), "status")
    status = _integer(status_info.next(INTEGER, "status value"), "status value")
    texts: list[str] = []
    free_text = status_info.optional(SEQUENCE)
    if free_text is not None:
        for item in free_text.children():
            texts.append(item.content.decode("utf-8", errors="replace").strip().rstrip("."))
    failures: list[str] = []
    fail_info = status_info.optional(BIT_STRING)
    if fail_info is not None and fail_info.end > fail_info.start:
        bits = fail_info.content[1:]
        for bit, description in _PKI_FAILURE.items():
            if bit // 8 < len(bits) and bits[bit // 8] & (0x80 >> (bit % 8)):
                failures.append(description)
    if status not in (0, 1):
        description = f"status {status}"
        description += f" ({_PKI_STATUS[status]})" if status in _PKI_STATUS else ""
        description += ": " + ("; ".join(texts) if texts else "no reason given")
        if failures:
            description += " [failure: " + ", ".join(failures) + "]"
        raise _NotGrantedError(description)
    token_element = fields.optional(SEQUENCE)
    if token_element is None:
        raise TimestampError("the timestamp response was granted but contains no token")
    fields.done()
    return token_element


@dataclass(frozen=True)
class _ResponseInfo:
    token: bytes
    nonce: int | None
    imprint_algorithm: str
    hashed_message: bytes


def _read_response(data: bytes) -> _ResponseInfo:
    """The token of a granted TimeStampResp and what its request asked for, not yet verified.

    For ``portal.evidence.tsa``, which checks the nonce and imprint before verifying. Raises
    ``_NotGrantedError`` for a refusal, ``TimestampError`` for anything unreadable.
    """
    content_info = _content_info(data)
    fields = _Fields(_signed_data(content_info), "SignedData")
    fields.next(INTEGER, "version")
    fields.next(SET, "digest algorithms")
    tst_info = _tst_info(fields.next(SEQUENCE, "encapsulated content"))
    imprint_algorithm, _ = _algorithm(tst_info.imprint_algorithm, "imprint hash")
    return _ResponseInfo(
        token=content_info.encoded,
        nonce=tst_info.nonce,
        imprint_algorithm=imprint_algorithm,
        hashed_message=tst_info.hashed_message,
    )


def _signed_data(content_info: _Element) -> _Element:
    fields = _Fields(content_info, "ContentInfo")
    content_type = _oid(fields.next(OBJECT_IDENTIFIER, "content type"), "content type")
    if content_type != OID_SIGNED_DATA:
        raise TimestampError(
            f"the token is not CMS signed data (its content type is {content_type}, "
            f"not id-signedData {OID_SIGNED_DATA})"
        )
    explicit = fields.next(0xA0, "content")
    fields.done()
    inner = explicit.children()
    if len(inner) != 1:
        raise _malformed(explicit.offset, "the ContentInfo content must hold exactly one element")
    return _expect(inner[0], SEQUENCE, "SignedData")


def _tst_info(encap: _Element) -> _TSTInfo:
    fields = _Fields(encap, "encapsulated content")
    content_type = _oid(fields.next(OBJECT_IDENTIFIER, "content type"), "content type")
    if content_type != OID_TST_INFO:
        raise TimestampError(
            f"the signed content is not a TSTInfo (its type is {content_type}, "
            f"not id-ct-TSTInfo {OID_TST_INFO})"
        )
    explicit = fields.optional(0xA0)
    fields.done()
    if explicit is None:
        raise TimestampError("the token carries no TSTInfo (its content is detached)")
    inner = explicit.children()
    if len(inner) != 1:
        raise _malformed(explicit.offset, "the eContent must hold exactly one OCTET STRING")
    octets = _expect(inner[0], OCTET_STRING, "eContent")
    info = _expect(
        _read_single(octets.buf, octets.start, octets.end, "TSTInfo"), SEQUENCE, "TSTInfo"
    )

    tst = _Fields(info, "TSTInfo")
    version = _integer(tst.next(INTEGER, "version"), "TSTInfo version")
    if version != 1:
        raise TimestampError(f"the TSTInfo has version {version}; only version 1 exists")
    _oid(tst.next(OBJECT_IDENTIFIER, "policy"), "TSA policy")
    imprint = _Fields(tst.next(SEQUENCE, "message imprint"), "message imprint")
    imprint_algorithm = imprint.next(SEQUENCE, "hash algorithm")
    hashed_message = _octets(imprint.next(OCTET_STRING, "hashed message"), "hashed message")
    imprint.done()
    serial = _integer(tst.next(INTEGER, "serial number"), "serial number")
    gen_time = _generalized_time(tst.next(GENERALIZED_TIME, "genTime"), "genTime")
    tst.optional(SEQUENCE)  # accuracy
    ordering = tst.optional(BOOLEAN)
    if ordering is not None:
        _boolean(ordering, "ordering flag")
    nonce_element = tst.optional(INTEGER)
    nonce = None if nonce_element is None else _integer(nonce_element, "nonce")
    tst.optional(0xA0)  # tsa name
    tst.optional(0xA1)  # extensions
    tst.done()
    return _TSTInfo(
        encoded=info.encoded,
        imprint_algorithm=imprint_algorithm,
        hashed_message=hashed_message,
        serial=serial,
        gen_time=gen_time,
        nonce=nonce,
    )


def _signer_info(element: _Element) -> _SignerInfo:
    fields = _Fields(_expect(element, SEQUENCE, "SignerInfo"), "SignerInfo")
    _integer(fields.next(INTEGER, "version"), "SignerInfo version")
    sid = fields.any("signer identifier")
    issuer: _Element | None = None
    serial: int | None = None
    key_identifier: bytes | None = None
    if sid.tag == SEQUENCE:
        issuer_and_serial = _Fields(sid, "issuer and serial number")
        issuer = issuer_and_serial.next(SEQUENCE, "issuer")
        serial = _integer(issuer_and_serial.next(INTEGER, "serial number"), "serial number")
        issuer_and_serial.done()
    elif sid.tag == 0x80:
        key_identifier = sid.content
    else:
        raise _malformed(sid.offset, "the signer identifier is neither issuer+serial nor a key id")
    digest = _digest(fields.next(SEQUENCE, "digest algorithm"), "signer's digest algorithm")
    signed_attributes = fields.optional(0xA0)
    signature_algorithm, signature_parameters = _algorithm(
        fields.next(SEQUENCE, "signature algorithm"), "signature algorithm"
    )
    signature = _octets(fields.next(OCTET_STRING, "signature"), "signature")
    fields.optional(0xA1)  # unsigned attributes
    fields.done()
    if signed_attributes is None:
        raise TimestampError(
            "the token's signature has no signed attributes; RFC 3161 requires them "
            "(content type, message digest and signing certificate)"
        )
    return _SignerInfo(
        issuer=issuer,
        serial=serial,
        key_identifier=key_identifier,
        digest=digest,
        signed_attributes=signed_attributes,
        signature_algorithm=signature_algorithm,
        signature_parameters=signature_parameters,
        signature=signature,
    )


def _attributes(signed_attributes: _Element) -> dict[str, list[_Element]]:
    attributes: dict[str, list[_Element]] = {}
    for attribute in signed_attributes.children():
        fields = _Fields(_expect(attribute, SEQUENCE, "signed attribute"), "signed attribute")
        oid = _oid(fields.next(OBJECT_IDENTIFIER, "type"), "signed attribute type")
        values = fields.next(SET, "values").children()
        fields.done()
        if oid in attributes:
            raise TimestampError(f"the signed attribute {oid} appears more than once")
        if not values:
            raise _malformed(attribute.offset, f"the signed attribute {oid} has no value")
        attributes[oid] = values
    return attributes


def _single(attributes: dict[str, list[_Element]], oid: str, name: str) -> _Element | None:
    values = attributes.get(oid)
    if values is None:
        return None
    if len(values) != 1:
        raise TimestampError(f"the {name} signed attribute must have exactly one value")
    return values[0]


# --- Certificates ---------------------------------------------------------------------------


_CERTIFICATE_ERRORS = (
    ValueError,
    x509.InvalidVersion,
    x509.DuplicateExtension,
    x509.UnsupportedGeneralNameType,
)


def _read_fully(certificates: list[x509.Certificate]) -> list[x509.Certificate]:
    """Parse names and extensions now (``cryptography`` does so lazily), so that a damaged
    certificate is reported where it is loaded, not by whichever check touches it first."""
    for certificate in certificates:
        _ = certificate.subject, certificate.issuer, certificate.extensions
    return certificates


def _embedded_certificates(certificates: _Element | None) -> list[x509.Certificate]:
    if certificates is None:
        return []
    loaded: list[x509.Certificate] = []
    for element in certificates.children():
        if element.tag != SEQUENCE:
            continue  # attribute certificates and other formats are not used here
        tbs = _Fields(_Fields(element, "certificate").next(SEQUENCE, "TBS"), "certificate")
        tbs.optional(0xA0)  # version
        if _integer(tbs.next(INTEGER, "serial number"), "serial number") <= 0:
            raise TimestampError(
                f"the certificate at offset {element.offset} in the token has a serial number "
                "that is not positive, which RFC 5280 forbids"
            )
        try:
            loaded += _read_fully([x509.load_der_x509_certificate(element.encoded)])
        except _CERTIFICATE_ERRORS as exc:
            raise TimestampError(
                f"the certificate at offset {element.offset} in the token cannot be read: {exc}"
            ) from None
    return loaded


def _pem_certificates(pems: list[bytes], what: str) -> list[x509.Certificate]:
    loaded: list[x509.Certificate] = []
    for number, pem in enumerate(pems, start=1):
        if b"-----BEGIN CERTIFICATE-----" not in pem:
            raise TimestampError(f"{what} #{number} is not a PEM certificate")
        try:
            loaded += _read_fully(x509.load_pem_x509_certificates(pem))
        except _CERTIFICATE_ERRORS as exc:
            raise TimestampError(f"{what} #{number} cannot be read: {exc}") from None
    return loaded


def _raw_issuer(certificate: x509.Certificate) -> bytes:
    """The issuer Name of a certificate exactly as encoded in it."""
    tbs_bytes = certificate.tbs_certificate_bytes
    try:
        tbs = _Fields(_read_single(tbs_bytes, 0, len(tbs_bytes), "certificate"), "certificate")
        tbs.optional(0xA0)  # version
        tbs.next(INTEGER, "serial number")
        tbs.next(SEQUENCE, "signature algorithm")
        return tbs.next(SEQUENCE, "issuer").encoded
    except TimestampError:
        return certificate.issuer.public_bytes()


def _key_identifier(certificate: x509.Certificate) -> bytes | None:
    try:
        extension = certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
        return extension.value.digest
    except x509.ExtensionNotFound:
        pass
    except ValueError:
        return None
    try:
        return x509.SubjectKeyIdentifier.from_public_key(certificate.public_key()).digest
    except (ValueError, TypeError, UnsupportedAlgorithm):
        return None


def _find_signer(signer: _SignerInfo, candidates: list[x509.Certificate]) -> x509.Certificate:
    for certificate in candidates:
        if signer.issuer is not None:
            if (
                certificate.serial_number == signer.serial
                and _raw_issuer(certificate) == signer.issuer.encoded
            ):
                return certificate
        elif signer.key_identifier is not None and hmac.compare_digest(
            _key_identifier(certificate) or b"", signer.key_identifier
        ):
            return certificate
    if signer.issuer is not None:
        wanted = f"issuer {_describe_name(signer.issuer)}, serial number {signer.serial or 0:#x}"
    else:
        wanted = f"subject key identifier {(signer.key_identifier or b'').hex()}"
    raise TimestampError(
        f"the TSA's signing certificate ({wanted}) is neither in the token nor among the "
        "extra certificates given"
    )


def _check_signing_certificate_attribute(
    attributes: dict[str, list[_Element]], certificate: x509.Certificate
) -> None:
    """ESS signing-certificate (RFC 2634) or signing-certificate-v2 (RFC 5035), when present."""
    for oid, version in (
        (OID_ATTR_SIGNING_CERTIFICATE_V2, "signing-certificate-v2"),
        (OID_ATTR_SIGNING_CERTIFICATE, "signing-certificate"),
    ):
        value = _single(attributes, oid, version)
        if value is None:
            continue
        outer = _Fields(_expect(value, SEQUENCE, version), version)
        ids = outer.next(SEQUENCE, "certificate list").children()
        if not ids:
            raise TimestampError(f"the {version} attribute lists no certificate")
        cert_id = _Fields(_expect(ids[0], SEQUENCE, "certificate id"), "certificate id")
        digest = _SHA1_FOR_CERT_ID
        if oid == OID_ATTR_SIGNING_CERTIFICATE_V2:
            digest = _DIGESTS[OID_SHA256]
            algorithm = cert_id.optional(SEQUENCE)
            if algorithm is not None:
                digest = _digest(algorithm, f"{version} hash", allow_sha1_for_cert_id=True)
        cert_hash = _octets(cert_id.next(OCTET_STRING, "certificate hash"), "certificate hash")
        der = certificate.public_bytes(Encoding.DER)
        if not hmac.compare_digest(digest.of(der), cert_hash):
            raise TimestampError(
                f"the {version} attribute names a different certificate than the one that "
                "signed the token (the signer's certificate was substituted)"
            )
        issuer_serial = cert_id.optional(SEQUENCE)
        if issuer_serial is not None:
            fields = _Fields(issuer_serial, "issuer and serial")
            names = fields.next(SEQUENCE, "issuer names").children()
            serial = _integer(fields.next(INTEGER, "serial number"), "serial number")
            directory = [name for name in names if name.tag == 0xA4]
            issuer_matches = not directory or any(
                len(children := name.children()) == 1
                and children[0].encoded == _raw_issuer(certificate)
                for name in directory
            )
            if serial != certificate.serial_number or not issuer_matches:
                raise TimestampError(
                    f"the {version} attribute's issuer and serial number do not match the "
                    "certificate that signed the token"
                )


def _check_signature(signer: _SignerInfo, certificate: x509.Certificate) -> None:
    data = b"\x31" + signer.signed_attributes.encoded[1:]  # DER of the SET OF, not [0]
    algorithm = signer.signature_algorithm
    if algorithm in _WEAK_SIGNATURES:
        raise TimestampError(
            f"the token is signed with {_WEAK_SIGNATURES[algorithm]}, which is too weak"
        )
    try:
        key = certificate.public_key()
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise TimestampError(
            f"the signing certificate's public key cannot be used: {exc}"
        ) from None
    try:
        if algorithm == OID_RSA_ENCRYPTION or algorithm in _RSA_PKCS1:
            if not isinstance(key, rsa.RSAPublicKey):
                raise _wrong_key("RSA")
            digest = signer.digest
            if algorithm in _RSA_PKCS1:
                digest = _digest_by_oid(_RSA_PKCS1[algorithm], "signature hash")
            key.verify(signer.signature, data, padding.PKCS1v15(), digest.factory())
        elif algorithm == OID_RSASSA_PSS:
            if not isinstance(key, rsa.RSAPublicKey):
                raise _wrong_key("RSA-PSS")
            digest, pss = _pss(signer.signature_parameters)
            key.verify(signer.signature, data, pss, digest.factory())
        elif algorithm == OID_EC_PUBLIC_KEY or algorithm in _ECDSA:
            if not isinstance(key, ec.EllipticCurvePublicKey):
                raise _wrong_key("ECDSA")
            digest = signer.digest
            if algorithm in _ECDSA:
                digest = _digest_by_oid(_ECDSA[algorithm], "signature hash")
            key.verify(signer.signature, data, ec.ECDSA(digest.factory()))
        else:
            raise TimestampError(f"the signature algorithm {algorithm} is not supported")
    except (InvalidSignature, ValueError):
        raise TimestampError(
            "the TSA's signature does not verify: the token was altered or was not signed "
            "by the key of its signing certificate"
        ) from None
    except UnsupportedAlgorithm as exc:
        raise TimestampError(f"the signature cannot be checked here: {exc}") from None


def _wrong_key(name: str) -> TimestampError:
    return TimestampError(
        f"the token is signed with {name} but the signing certificate holds another kind of key"
    )


def _pss(parameters: _Element | None) -> tuple[_Digest, padding.PSS]:
    """RSASSA-PSS-params (RFC 4055); the SHA-1 defaults are refused as too weak."""
    if parameters is None or parameters.tag != SEQUENCE:
        raise TimestampError("the RSA-PSS signature has no parameters (SHA-1 defaults refused)")
    fields = _Fields(parameters, "RSA-PSS parameters")
    hash_field = fields.optional(0xA0)
    mgf_field = fields.optional(0xA1)
    salt_field = fields.optional(0xA2)
    trailer_field = fields.optional(0xA3)
    fields.done()
    if hash_field is None or mgf_field is None:
        raise TimestampError("the RSA-PSS signature uses the SHA-1 default, which is too weak")
    digest = _digest(_explicit(hash_field, "RSA-PSS hash"), "RSA-PSS hash")
    mgf, mgf_parameters = _algorithm(_explicit(mgf_field, "RSA-PSS mask"), "RSA-PSS mask")
    if mgf != OID_MGF1 or mgf_parameters is None:
        raise TimestampError(f"the RSA-PSS mask generation function {mgf} is not supported")
    mgf_digest = _digest(mgf_parameters, "RSA-PSS mask hash")
    salt_length = 20
    if salt_field is not None:
        salt_length = _integer(_explicit(salt_field, "RSA-PSS salt length"), "salt length")
    if trailer_field is not None:
        trailer = _integer(_explicit(trailer_field, "RSA-PSS trailer"), "trailer field")
        if trailer != 1:
            raise TimestampError(f"the RSA-PSS trailer field {trailer} is not supported")
    if salt_length < 0:
        raise TimestampError("the RSA-PSS salt length is negative")
    return digest, padding.PSS(mgf=padding.MGF1(mgf_digest.factory()), salt_length=salt_length)


def _explicit(element: _Element, what: str) -> _Element:
    inner = element.children()
    if len(inner) != 1:
        raise _malformed(element.offset, f"the {what} must hold exactly one element")
    return inner[0]


def _check_tsa_certificate(certificate: x509.Certificate, gen_time: datetime) -> None:
    subject = certificate.subject.rfc4514_string()
    prefix = f"the signing certificate ({subject}) is not a time-stamping certificate"
    try:
        extensions = certificate.extensions
    except ValueError as exc:
        raise TimestampError(
            f"the signing certificate's extensions cannot be read: {exc}"
        ) from None
    try:
        eku = extensions.get_extension_for_class(x509.ExtendedKeyUsage)
    except x509.ExtensionNotFound:
        raise TimestampError(
            f"{prefix}: it has no extended key usage extension with id-kp-timeStamping"
        ) from None
    if ExtendedKeyUsageOID.TIME_STAMPING not in eku.value:
        raise TimestampError(f"{prefix}: its extended key usage does not include timeStamping")
    if not eku.critical:
        raise TimestampError(
            f"{prefix}: its extended key usage extension is not critical, as RFC 3161 requires"
        )
    try:
        key_usage = extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        pass
    else:
        if not (key_usage.digital_signature or key_usage.content_commitment):
            raise TimestampError(f"{prefix}: its key usage does not allow signatures")
    not_before = certificate.not_valid_before_utc
    not_after = certificate.not_valid_after_utc
    if not not_before <= gen_time <= not_after:
        raise TimestampError(
            f"the timestamp's time {gen_time.isoformat()} is outside the signing certificate's "
            f"validity ({not_before.isoformat()} to {not_after.isoformat()})"
        )


def _ee_eku(_policy: Policy, _certificate: x509.Certificate, eku: x509.ExtendedKeyUsage) -> None:
    if ExtendedKeyUsageOID.TIME_STAMPING not in eku:
        raise ValueError("the certificate's extended key usage does not include timeStamping")


def _ca_eku(
    _policy: Policy, _certificate: x509.Certificate, eku: x509.ExtendedKeyUsage | None
) -> None:
    allowed = {ExtendedKeyUsageOID.TIME_STAMPING, ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE}
    if eku is not None and not allowed.intersection(eku):
        raise ValueError("the CA's extended key usage does not allow timeStamping")


def _check_chain(
    signer: x509.Certificate,
    others: list[x509.Certificate],
    roots: list[x509.Certificate],
    at: datetime,
) -> None:
    """Path-build from the signer to a trusted root, as of ``at``, for the timeStamping purpose."""
    ee_policy = (
        ExtensionPolicy.webpki_defaults_ee()
        .may_be_present(x509.SubjectAlternativeName, Criticality.AGNOSTIC, None)
        .require_present(x509.ExtendedKeyUsage, Criticality.CRITICAL, _ee_eku)
    )
    ca_policy = ExtensionPolicy.webpki_defaults_ca().may_be_present(
        x509.ExtendedKeyUsage, Criticality.AGNOSTIC, _ca_eku
    )
    verifier = (
        PolicyBuilder()
        .store(Store(roots))
        .time(at)
        .extension_policies(ca_policy=ca_policy, ee_policy=ee_policy)
        .build_client_verifier()
    )
    intermediates = [certificate for certificate in others if certificate != signer]
    try:
        verifier.verify(signer, intermediates)
    except VerificationError as exc:
        raise TimestampError(
            f"the TSA's certificate ({signer.subject.rfc4514_string()}) does not chain to a "
            f"trusted root: {exc}"
        ) from None


# --- Entry point ----------------------------------------------------------------------------


def verify_timestamp(
    token: bytes,
    message: bytes,
    extra_certs_pem: list[bytes] | None = None,
    trusted_roots_pem: list[bytes] | None = None,
) -> TimestampResult:
    """Verify an RFC 3161 timestamp ``token`` (or a whole TimeStampResp) over ``message``.

    ``extra_certs_pem`` supplies certificates the token may not carry (the TSA's own, or
    intermediates); ``trusted_roots_pem`` the roots the signing certificate must chain to. Each
    item may hold several PEM certificates. Raises ``TimestampError`` on any failure.
    """
    token = bytes(token)
    extra = _pem_certificates(extra_certs_pem or [], "extra certificate")
    roots = None
    if trusted_roots_pem is not None:
        roots = _pem_certificates(trusted_roots_pem, "trusted root")
        if not roots:
            raise TimestampError("the list of trusted roots is empty")

    signed_data = _signed_data(_content_info(token))
    fields = _Fields(signed_data, "SignedData")
    _integer(fields.next(INTEGER, "version"), "SignedData version")
    fields.next(SET, "digest algorithms")
    tst_info = _tst_info(fields.next(SEQUENCE, "encapsulated content"))
    certificates = fields.optional(0xA0)
    fields.optional(0xA1)  # revocation information
    signer_infos = fields.next(SET, "signer infos").children()
    fields.done()
    if len(signer_infos) != 1:
        raise TimestampError(
            f"a timestamp token must have exactly one signature, this one has {len(signer_infos)}"
        )
    signer = _signer_info(signer_infos[0])

    embedded = _embedded_certificates(certificates)
    certificate = _find_signer(signer, embedded + extra)

    attributes = _attributes(signer.signed_attributes)
    content_type = _single(attributes, OID_ATTR_CONTENT_TYPE, "content-type")
    if content_type is None:
        raise TimestampError("the token's signed attributes lack the content type")
    if _oid(content_type, "signed content type") != OID_TST_INFO:
        raise TimestampError("the signed content-type attribute is not id-ct-TSTInfo")
    digest_value = _single(attributes, OID_ATTR_MESSAGE_DIGEST, "message-digest")
    if digest_value is None:
        raise TimestampError("the token's signed attributes lack the message digest")
    expected = _octets(digest_value, "message digest")
    if not hmac.compare_digest(signer.digest.of(tst_info.encoded), expected):
        raise TimestampError(
            "the TSTInfo does not match the digest the TSA signed: the token's content was "
            "altered after signing"
        )
    _check_signature(signer, certificate)
    _check_tsa_certificate(certificate, tst_info.gen_time)
    _check_signing_certificate_attribute(attributes, certificate)

    imprint_oid, imprint_parameters = _algorithm(tst_info.imprint_algorithm, "imprint hash")
    if imprint_parameters is not None and imprint_parameters.tag != NULL:
        raise _malformed(imprint_parameters.offset, "the imprint hash has unexpected parameters")
    imprint_digest = _digest_by_oid(imprint_oid, "message imprint's hash algorithm")
    if not hmac.compare_digest(imprint_digest.of(message), tst_info.hashed_message):
        raise TimestampError(
            f"the timestamp is for a different message: the message's "
            f"{imprint_digest.label} digest does not match the token's message imprint"
        )

    chained: bool | None = None
    if roots is not None:
        _check_chain(certificate, embedded + extra, roots, tst_info.gen_time)
        chained = True

    return TimestampResult(
        time=tst_info.gen_time,
        tsa_name=certificate.subject.rfc4514_string(),
        serial=tst_info.serial,
        hash_algorithm=imprint_digest.name,
        chained_to_trusted_root=chained,
        certificate_fingerprint=certificate.fingerprint(hashes.SHA256()).hex(),
    )
