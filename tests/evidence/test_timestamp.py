"""RFC 3161 timestamps: the portal's client against a real OpenSSL TSA, and the offline verifier."""

from __future__ import annotations

import hashlib
import json
import re
import socket
import subprocess
import sys
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import rfc3161_client
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from portal.evidence.tsa import TimestampAuthorityError, TimestampToken, request_timestamp
from portal.evidence.verify.timestamp import TimestampError, TimestampResult, verify_timestamp
from tests.evidence.tsa_server import (
    EC_TSA_NAME,
    TSA_NAME,
    LocalTSA,
    der,
    granted_response,
    local_tsa_fixture,  # noqa: F401 (the `local_tsa` fixture)
)

ROOT = Path(__file__).resolve().parents[2]
MESSAGE = b"jiefen.example/evidence\n42\nq0Mh1M2R2m4Yc8uX0JXeQm0TqS7b9kZL8pP3a1n2c3E=\n"
RSA_SIGNATURE_LENGTH = 256


def post_query(url: str, message: bytes, *, cert_req: bool = True) -> bytes:
    """A TimeStampResp for ``message``, fetched without the portal's client."""
    query = (
        rfc3161_client.TimestampRequestBuilder()
        .data(message)
        .hash_algorithm(rfc3161_client.HashAlgorithm.SHA256)
        .cert_request(cert_request=cert_req)
        .build()
    )
    return post_raw(url, query.as_bytes())


def post_raw(url: str, query: bytes) -> bytes:
    request = urllib.request.Request(  # noqa: S310 (the test TSA)
        url,
        data=query,
        headers={"Content-Type": "application/timestamp-query"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
        body: bytes = response.read()
    return body


def token_of(response: bytes) -> bytes:
    """The TimeStampToken of a granted TimeStampResp: its second element, found by hand."""
    assert response[0] == 0x30
    start = 2 + (response[1] & 0x7F if response[1] & 0x80 else 0)
    status_length = response[start + 1]
    assert response[start] == 0x30
    assert status_length < 0x80
    assert response[start + 2 : start + 5] == b"\x02\x01\x00"  # granted
    return response[start + 2 + status_length :]


@pytest.fixture(scope="module")
def response(local_tsa: LocalTSA) -> bytes:
    return post_query(local_tsa.url, MESSAGE)


@pytest.fixture(scope="module")
def token(response: bytes) -> bytes:
    return token_of(response)


def flipped(data: bytes, index: int) -> bytes:
    return data[:index] + bytes([data[index] ^ 0x01]) + data[index + 1 :]


# --- The portal's client ------------------------------------------------------------------------


async def test_request_timestamp_returns_a_verified_token(local_tsa: LocalTSA) -> None:
    before = datetime.now(UTC)
    started = time.perf_counter()
    stamped = await request_timestamp(local_tsa.url, MESSAGE, ca_certs_pem=[local_tsa.root_ca_pem])
    elapsed = time.perf_counter() - started
    assert isinstance(stamped, TimestampToken)
    assert stamped.tsa_name == TSA_NAME
    assert stamped.time.tzinfo is not None
    assert before - timedelta(seconds=2) <= stamped.time <= datetime.now(UTC) + timedelta(seconds=2)
    assert elapsed < 5
    again = verify_timestamp(stamped.token_der, MESSAGE, trusted_roots_pem=[local_tsa.root_ca_pem])
    assert (again.time, again.serial, again.tsa_name) == (
        stamped.time,
        stamped.serial,
        stamped.tsa_name,
    )
    assert again.chained_to_trusted_root is True


async def test_request_timestamp_serials_differ(local_tsa: LocalTSA) -> None:
    first = await request_timestamp(local_tsa.url, b"one")
    second = await request_timestamp(local_tsa.url, b"two")
    assert first.serial != second.serial
    assert first.time <= second.time


async def test_ecdsa_tsa_with_signing_certificate_v1(local_tsa: LocalTSA) -> None:
    # This TSA leaves its intermediate out: the CA file is a bundle of root and intermediate.
    bundle = local_tsa.root_ca_pem + local_tsa.intermediate_ca_pem
    stamped = await request_timestamp(local_tsa.url_for("tsa-ec"), MESSAGE, ca_certs_pem=[bundle])
    assert stamped.tsa_name == EC_TSA_NAME
    result = verify_timestamp(
        stamped.token_der,
        MESSAGE,
        extra_certs_pem=[local_tsa.intermediate_ca_pem],
        trusted_roots_pem=[local_tsa.root_ca_pem],
    )
    assert result.chained_to_trusted_root is True
    with pytest.raises(TimestampError, match="does not chain"):
        verify_timestamp(stamped.token_der, MESSAGE, trusted_roots_pem=[local_tsa.root_ca_pem])


async def test_rsa_pss_signature(local_tsa: LocalTSA) -> None:
    bundle = local_tsa.root_ca_pem + local_tsa.intermediate_ca_pem
    stamped = await request_timestamp(local_tsa.url_for("tsa-pss"), MESSAGE, ca_certs_pem=[bundle])
    assert stamped.tsa_name == TSA_NAME
    assert b"\x06\x09\x2a\x86\x48\x86\xf7\x0d\x01\x01\x0a" in stamped.token_der  # id-RSASSA-PSS
    tampered = flipped(stamped.token_der, len(stamped.token_der) - 10)
    with pytest.raises(TimestampError, match="signature does not verify"):
        verify_timestamp(tampered, MESSAGE)


async def test_untrusted_tsa_is_refused_by_the_client(local_tsa: LocalTSA) -> None:
    with pytest.raises(TimestampAuthorityError, match="does not chain to a trusted root"):
        await request_timestamp(local_tsa.url, MESSAGE, ca_certs_pem=[local_tsa.unrelated_root_pem])


async def test_tsa_without_timestamping_eku_is_refused_by_the_client(local_tsa: LocalTSA) -> None:
    with pytest.raises(TimestampAuthorityError, match="not a time-stamping certificate"):
        await request_timestamp(local_tsa.url_for("no-eku"), MESSAGE)


async def test_rejection_status_and_text_are_reported(local_tsa: LocalTSA) -> None:
    with pytest.raises(TimestampAuthorityError) as caught:
        await request_timestamp(local_tsa.url_for("reject"), MESSAGE)
    text = str(caught.value)
    assert "refused the request" in text
    assert "status 2 (rejection)" in text
    assert "Message digest algorithm is not supported" in text


async def test_replayed_response_fails_the_nonce_check(local_tsa: LocalTSA) -> None:
    await request_timestamp(local_tsa.url_for("replay"), MESSAGE)
    with pytest.raises(TimestampAuthorityError, match="wrong nonce"):
        await request_timestamp(local_tsa.url_for("replay"), MESSAGE)


async def test_http_error_is_reported(local_tsa: LocalTSA) -> None:
    with pytest.raises(TimestampAuthorityError, match=r"answered HTTP 500 Internal Server Error"):
        await request_timestamp(local_tsa.url_for("http-500"), MESSAGE)


async def test_garbage_answer_is_reported(local_tsa: LocalTSA) -> None:
    with pytest.raises(TimestampAuthorityError, match="did not send a timestamp response"):
        await request_timestamp(local_tsa.url_for("garbage"), MESSAGE)


async def test_unreachable_tsa_is_reported() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(TimestampAuthorityError, match="could not reach"):
        await request_timestamp(f"http://127.0.0.1:{port}/tsa", MESSAGE, timeout=2)


async def test_slow_tsa_times_out(local_tsa: LocalTSA) -> None:
    started = time.perf_counter()
    with pytest.raises(TimestampAuthorityError, match=r"did not answer within 0\.3 seconds"):
        await request_timestamp(local_tsa.url_for("slow"), MESSAGE, timeout=0.3)
    assert time.perf_counter() - started < 3


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://tsa.example/", "tsa.example"])
async def test_only_http_urls_are_used(url: str) -> None:
    with pytest.raises(TimestampAuthorityError, match="must be http or https"):
        await request_timestamp(url, MESSAGE)


# --- The offline verifier -----------------------------------------------------------------------


def test_verify_with_trusted_root(local_tsa: LocalTSA, token: bytes) -> None:
    result = verify_timestamp(token, MESSAGE, trusted_roots_pem=[local_tsa.root_ca_pem])
    tsa_cert = x509.load_pem_x509_certificate(local_tsa.tsa_cert_pem)
    assert isinstance(result, TimestampResult)
    assert result.chained_to_trusted_root is True
    assert result.tsa_name == TSA_NAME
    assert result.hash_algorithm == "sha256"
    assert result.certificate_fingerprint == tsa_cert.fingerprint(hashes.SHA256()).hex()
    assert abs(result.time - datetime.now(UTC)) < timedelta(minutes=5)
    assert result.time.tzinfo is not None


def test_verify_without_roots_reports_chain_unknown(token: bytes) -> None:
    assert verify_timestamp(token, MESSAGE).chained_to_trusted_root is None


def test_verify_accepts_the_whole_response(local_tsa: LocalTSA, response: bytes) -> None:
    result = verify_timestamp(response, MESSAGE, trusted_roots_pem=[local_tsa.root_ca_pem])
    assert result == verify_timestamp(
        token_of(response), MESSAGE, trusted_roots_pem=[local_tsa.root_ca_pem]
    )


def test_gen_time_keeps_fractional_seconds(token: bytes) -> None:
    # The TSA is configured with clock_precision_digits = 3: genTime is YYYYMMDDhhmmss[.fff]Z.
    match = re.search(rb"\x18[\x0f-\x13](\d{14}(?:\.\d{1,3})?)Z", token)
    assert match is not None
    text = match.group(1).decode()
    expected = datetime.strptime(text if "." in text else text + ".0", "%Y%m%d%H%M%S.%f")
    assert verify_timestamp(token, MESSAGE).time == expected.replace(tzinfo=UTC)


def test_unrelated_root_is_untrusted(local_tsa: LocalTSA, token: bytes) -> None:
    with pytest.raises(TimestampError, match="does not chain to a trusted root"):
        verify_timestamp(token, MESSAGE, trusted_roots_pem=[local_tsa.unrelated_root_pem])


def test_intermediate_as_trust_anchor_is_enough(local_tsa: LocalTSA, token: bytes) -> None:
    result = verify_timestamp(token, MESSAGE, trusted_roots_pem=[local_tsa.intermediate_ca_pem])
    assert result.chained_to_trusted_root is True


def test_empty_trusted_roots_is_an_error(token: bytes) -> None:
    with pytest.raises(TimestampError, match="list of trusted roots is empty"):
        verify_timestamp(token, MESSAGE, trusted_roots_pem=[])


def test_sha1_imprint_is_refused_as_too_weak(local_tsa: LocalTSA) -> None:
    sha1 = der(0x30, der(0x06, bytes.fromhex("2b0e03021a")) + der(0x05, b""))
    imprint = der(0x30, sha1 + der(0x04, hashlib.sha1(MESSAGE).digest()))  # noqa: S324
    query = der(0x30, der(0x02, b"\x01") + imprint + der(0x01, b"\xff"))  # v1, certReq
    response = post_raw(local_tsa.url_for("tsa-legacy"), query)
    with pytest.raises(TimestampError, match="SHA-1, which is too weak"):
        verify_timestamp(response, MESSAGE, trusted_roots_pem=[local_tsa.root_ca_pem])


def test_gen_time_outside_certificate_validity_is_refused(local_tsa: LocalTSA) -> None:
    bare = token_of(post_query(local_tsa.url, MESSAGE, cert_req=False))
    with pytest.raises(TimestampError, match="outside the signing certificate's validity"):
        verify_timestamp(bare, MESSAGE, extra_certs_pem=[local_tsa.tsa_cert_expired_pem])


def test_wrong_message_is_an_imprint_mismatch(token: bytes) -> None:
    with pytest.raises(TimestampError, match=r"different message.*SHA-256.*message imprint"):
        verify_timestamp(token, MESSAGE + b"x")


def test_flipped_signature_byte_is_a_bad_signature(token: bytes) -> None:
    # No unsigned attributes: the token ends with the RSA-2048 signature OCTET STRING.
    assert token[-RSA_SIGNATURE_LENGTH - 4 : -RSA_SIGNATURE_LENGTH] == b"\x04\x82\x01\x00"
    with pytest.raises(TimestampError, match="signature does not verify"):
        verify_timestamp(flipped(token, len(token) - 100), MESSAGE)


def test_flipped_tstinfo_byte_is_a_digest_mismatch(token: bytes) -> None:
    imprint_at = token.index(hashlib.sha256(MESSAGE).digest())
    with pytest.raises(TimestampError, match="does not match the digest the TSA signed"):
        verify_timestamp(flipped(token, imprint_at + 3), MESSAGE)


def test_truncated_token_is_malformed(token: bytes) -> None:
    with pytest.raises(TimestampError, match=r"malformed DER at offset 0: .*truncated"):
        verify_timestamp(token[:-1], MESSAGE)
    for cut in range(len(token)):
        with pytest.raises(TimestampError, match=r"malformed DER at offset \d+"):
            verify_timestamp(token[:cut], MESSAGE)


def test_every_single_byte_flip_is_caught_or_harmless(local_tsa: LocalTSA, token: bytes) -> None:
    """Never an IndexError or a traceback: a TimestampError, or a still-valid token when the
    flip hit something nobody relies on (the unused digestAlgorithms set, a chain certificate
    while no roots are given)."""
    good = verify_timestamp(token, MESSAGE)
    errors = 0
    for index in range(len(token)):
        try:
            result = verify_timestamp(flipped(token, index), MESSAGE)
        except TimestampError:
            errors += 1
        else:
            assert result == good
    assert errors > len(token) // 2


def test_garbage_is_malformed() -> None:
    for data in (b"", b"\x30", b"\x30\x80\x00\x00", b"\x1f\x00", b"\x30\x85\x01\x02\x03\x04\x05"):
        with pytest.raises(TimestampError, match="malformed DER at offset"):
            verify_timestamp(data, MESSAGE)


def test_not_signed_data_is_refused() -> None:
    content_info = bytes.fromhex("300f06092a864886f70d010701a0020400")  # id-data
    with pytest.raises(TimestampError, match="not CMS signed data"):
        verify_timestamp(content_info, MESSAGE)


def test_rejection_response_is_refused_with_its_text(local_tsa: LocalTSA) -> None:
    rejection = post_query(local_tsa.url_for("reject"), MESSAGE)
    with pytest.raises(TimestampError) as caught:
        verify_timestamp(rejection, MESSAGE)
    text = str(caught.value)
    assert "did not grant" in text
    assert "Message digest algorithm is not supported" in text
    assert "badAlg" in text


def test_tsa_certificate_without_timestamping_eku_is_refused(local_tsa: LocalTSA) -> None:
    response = post_query(local_tsa.url_for("no-eku"), MESSAGE)
    with pytest.raises(TimestampError, match=r"not a time-stamping certificate.*timeStamping"):
        verify_timestamp(response, MESSAGE, trusted_roots_pem=[local_tsa.root_ca_pem])
    with pytest.raises(TimestampError, match="not a time-stamping certificate"):
        verify_timestamp(response, MESSAGE)


def test_token_without_certificates_needs_extra_certs(local_tsa: LocalTSA) -> None:
    bare = token_of(post_query(local_tsa.url, MESSAGE, cert_req=False))
    with pytest.raises(TimestampError, match=r"signing certificate .*neither in the token"):
        verify_timestamp(bare, MESSAGE)
    result = verify_timestamp(
        bare,
        MESSAGE,
        extra_certs_pem=[local_tsa.tsa_cert_pem + local_tsa.intermediate_ca_pem],
        trusted_roots_pem=[local_tsa.root_ca_pem],
    )
    assert result.chained_to_trusted_root is True
    with pytest.raises(TimestampError, match="does not chain"):
        verify_timestamp(  # the intermediate is missing
            bare,
            MESSAGE,
            extra_certs_pem=[local_tsa.tsa_cert_pem],
            trusted_roots_pem=[local_tsa.root_ca_pem],
        )


def test_substituted_certificate_fails_the_signing_certificate_attribute(
    local_tsa: LocalTSA,
) -> None:
    """A certificate with the TSA's key, issuer and serial number but other contents: the
    signature still verifies with its key, but the ESS signing-certificate-v2 hash does not."""
    bare = token_of(post_query(local_tsa.url, MESSAGE, cert_req=False))
    with pytest.raises(TimestampError, match="signing-certificate-v2 attribute names a different"):
        verify_timestamp(bare, MESSAGE, extra_certs_pem=[local_tsa.tsa_cert_twin_pem])


def test_bad_pem_is_reported(local_tsa: LocalTSA, token: bytes) -> None:
    with pytest.raises(TimestampError, match="extra certificate #1 is not a PEM certificate"):
        verify_timestamp(token, MESSAGE, extra_certs_pem=[b"not a certificate"])
    with pytest.raises(TimestampError, match="trusted root #2 is not a PEM certificate"):
        verify_timestamp(token, MESSAGE, trusted_roots_pem=[local_tsa.root_ca_pem, b"nope"])


def test_verifying_is_quick(local_tsa: LocalTSA, token: bytes) -> None:
    started = time.perf_counter()
    for _ in range(20):
        verify_timestamp(token, MESSAGE, trusted_roots_pem=[local_tsa.root_ca_pem])
    assert (time.perf_counter() - started) / 20 < 0.1


# --- Agreement with rfc3161-client --------------------------------------------------------------


def rfc3161_client_accepts(response: bytes, message: bytes, root_pem: bytes, tsa: LocalTSA) -> bool:
    verifier = (
        rfc3161_client.VerifierBuilder()
        .add_root_certificate(x509.load_pem_x509_certificate(root_pem))
        .add_intermediate_certificate(x509.load_pem_x509_certificate(tsa.intermediate_ca_pem))
        .build()
    )
    try:
        return verifier.verify_message(rfc3161_client.decode_timestamp_response(response), message)
    except (rfc3161_client.VerificationError, ValueError):
        return False


def ours_accepts(response: bytes, message: bytes, root_pem: bytes, tsa: LocalTSA) -> bool:
    try:
        verify_timestamp(
            response,
            message,
            extra_certs_pem=[tsa.intermediate_ca_pem],
            trusted_roots_pem=[root_pem],
        )
    except TimestampError:
        return False
    return True


@pytest.mark.parametrize(
    ("route", "wrong_message", "unrelated_root", "accepted"),
    [
        ("tsa-leaf", False, False, True),
        ("tsa-ec", False, False, True),
        ("tsa-leaf", True, False, False),
        ("tsa-leaf", False, True, False),
        ("no-eku", False, False, False),
    ],
)
def test_rfc3161_client_agrees(
    local_tsa: LocalTSA, route: str, wrong_message: bool, unrelated_root: bool, accepted: bool
) -> None:
    response = post_query(local_tsa.url_for(route), MESSAGE)
    message = MESSAGE + b"!" if wrong_message else MESSAGE
    root = local_tsa.unrelated_root_pem if unrelated_root else local_tsa.root_ca_pem
    theirs = rfc3161_client_accepts(response, message, root, local_tsa)
    ours = ours_accepts(response, message, root, local_tsa)
    assert (theirs, ours) == (accepted, accepted)


def test_tampered_response_agreement(local_tsa: LocalTSA) -> None:
    response = post_query(local_tsa.url_for("tsa-leaf"), MESSAGE)
    assert ours_accepts(response, MESSAGE, local_tsa.root_ca_pem, local_tsa)
    bad = flipped(response, response.index(hashlib.sha256(MESSAGE).digest()) + 1)
    assert not ours_accepts(bad, MESSAGE, local_tsa.root_ca_pem, local_tsa)
    assert not rfc3161_client_accepts(bad, MESSAGE, local_tsa.root_ca_pem, local_tsa)


def test_granted_response_helper_round_trips(token: bytes) -> None:
    assert verify_timestamp(granted_response(token), MESSAGE) == verify_timestamp(token, MESSAGE)


# --- The offline verifier's dependencies --------------------------------------------------------


def test_verifier_imports_only_stdlib_and_cryptography() -> None:
    code = (
        "import json, sys\n"
        "before = set(sys.modules)\n"
        "import portal.evidence.verify.timestamp\n"
        "print(json.dumps(sorted(set(sys.modules) - before)))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, check=True, text=True
    )
    loaded = {name.split(".")[0] for name in json.loads(result.stdout)}
    # `_openssl` is cryptography's CFFI binding, registered in sys.modules by its Rust extension.
    part_of_cryptography = {"cryptography", "_cffi_backend", "_openssl"}
    allowed = set(sys.stdlib_module_names) | part_of_cryptography | {"portal"}
    assert loaded - allowed == set()
    assert "cryptography" in loaded
    assert "rfc3161_client" not in loaded
