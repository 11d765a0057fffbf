"""Ask a time-stamping authority (RFC 3161) to timestamp an evidence-log checkpoint.

The request is built with ``rfc3161-client`` (SHA-256 imprint, a fresh nonce, the TSA's
certificate requested) and POSTed with the standard library in a worker thread. The answer is
checked for a granting status, the nonce and the imprint, and then verified with
:func:`portal.evidence.verify.timestamp.verify_timestamp`, the very code the offline verifier
runs, so the portal never stores a token a clerk's verifier would refuse.
"""

from __future__ import annotations

import asyncio
import http.client
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from datetime import datetime

# The response is read with the offline verifier's DER reader rather than rfc3161-client's, which
# refuses a CMS certificate set that is not in DER order, as OpenSSL-based TSAs send it.
from portal.evidence.verify.timestamp import (
    TimestampError,
    _NotGrantedError,
    _read_response,
    verify_timestamp,
)

__all__ = ["TimestampAuthorityError", "TimestampToken", "request_timestamp"]

MAX_RESPONSE_BYTES = 1024 * 1024
"""A timestamp response is a few kilobytes; anything past this is not one."""


class TimestampAuthorityError(Exception):
    """The TSA could not be reached, refused, or answered with something that does not verify."""


@dataclass(frozen=True)
class TimestampToken:
    """A verified timestamp token, ready to store next to the checkpoint it covers."""

    token_der: bytes
    """The DER TimeStampToken (CMS ContentInfo), as ``verify_timestamp`` takes it."""
    time: datetime
    """``genTime``, timezone-aware UTC."""
    tsa_name: str
    """Subject of the TSA's signing certificate (RFC 4514)."""
    serial: int
    """The TSA's serial number for this token."""


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A TSA answers the POST itself; a redirect would turn it into a GET elsewhere."""

    def redirect_request(
        self,
        req: urllib.request.Request,
        fp: object,
        code: int,
        msg: str,
        headers: object,
        newurl: str,
    ) -> None:
        return None


def _post(url: str, body: bytes, timeout: float) -> tuple[bytes, str]:
    # The caller has checked that the scheme is http or https (no file: or custom schemes).
    request = urllib.request.Request(  # noqa: S310
        url,
        data=body,
        method="POST",
        headers={
            "Content-Type": "application/timestamp-query",
            "Accept": "application/timestamp-reply",
        },
    )
    opener = urllib.request.build_opener(_NoRedirect)
    try:
        with opener.open(request, timeout=timeout) as response:
            data: bytes = response.read(MAX_RESPONSE_BYTES + 1)
            content_type = response.headers.get("Content-Type", "no content type")
    except urllib.error.HTTPError as exc:
        with exc:
            raise TimestampAuthorityError(
                f"the time-stamping authority at {url} answered HTTP {exc.code} {exc.reason}"
            ) from None
    except urllib.error.URLError as exc:
        raise TimestampAuthorityError(
            f"could not reach the time-stamping authority at {url}: {exc.reason}"
        ) from exc
    except TimeoutError:
        raise TimestampAuthorityError(
            f"the time-stamping authority at {url} did not answer within {timeout:g} seconds"
        ) from None
    except (OSError, http.client.HTTPException) as exc:
        raise TimestampAuthorityError(
            f"the connection to the time-stamping authority at {url} failed: {exc!r}"
        ) from exc
    if len(data) > MAX_RESPONSE_BYTES:
        raise TimestampAuthorityError(
            f"the time-stamping authority at {url} sent more than {MAX_RESPONSE_BYTES} bytes; "
            "that is not a timestamp response"
        )
    return data, content_type


async def request_timestamp(
    url: str,
    message: bytes,
    *,
    # The socket timeout of the blocking request in its worker thread, which asyncio.timeout
    # could not interrupt.
    timeout: float = 10,  # noqa: ASYNC109
    ca_certs_pem: list[bytes] | None = None,
) -> TimestampToken:
    """Timestamp ``message`` at the TSA at ``url`` and return the verified token.

    ``ca_certs_pem`` are the roots (PEM, possibly bundles) the TSA's certificate must chain to;
    they also serve as extra certificates, for a TSA that leaves its chain out. Without them the
    token's signature, purpose and imprint are still checked, but not whom the TSA is trusted by.
    Raises ``TimestampAuthorityError`` with a plain-English reason.
    """
    if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
        raise TimestampAuthorityError(f"the TSA URL must be http or https, not {url!r}")
    if not message:
        raise TimestampAuthorityError("there is nothing to timestamp: the message is empty")
    # Imported when a checkpoint is stamped, not by every process that serves pages.
    from rfc3161_client import HashAlgorithm, TimestampRequestBuilder

    request = (
        TimestampRequestBuilder()
        .data(message)
        .hash_algorithm(HashAlgorithm.SHA256)
        .nonce(nonce=True)
        .cert_request(cert_request=True)
        .build()
    )
    body, content_type = await asyncio.to_thread(_post, url, request.as_bytes(), timeout)

    try:
        answer = _read_response(body)
    except _NotGrantedError as exc:
        raise TimestampAuthorityError(
            f"the time-stamping authority at {url} refused the request: {exc.description}"
        ) from None
    except TimestampError as exc:
        raise TimestampAuthorityError(
            f"the time-stamping authority at {url} did not send a timestamp response "
            f"({len(body)} bytes of {content_type}): {exc}"
        ) from None
    if answer.nonce != request.nonce:
        raise TimestampAuthorityError(
            f"the time-stamping authority at {url} answered with the wrong nonce: the "
            "response is not for this request"
        )
    wanted = request.message_imprint
    if (
        answer.imprint_algorithm != wanted.hash_algorithm.dotted_string
        or answer.hashed_message != wanted.message
    ):
        raise TimestampAuthorityError(
            f"the time-stamping authority at {url} timestamped a different message imprint"
        )
    try:
        result = verify_timestamp(
            answer.token, message, extra_certs_pem=ca_certs_pem, trusted_roots_pem=ca_certs_pem
        )
    except TimestampError as exc:
        raise TimestampAuthorityError(
            f"the token from the time-stamping authority at {url} does not verify: {exc}"
        ) from exc
    return TimestampToken(
        token_der=answer.token, time=result.time, tsa_name=result.tsa_name, serial=result.serial
    )
