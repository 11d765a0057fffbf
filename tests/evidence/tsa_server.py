"""A real RFC 3161 time-stamping authority on loopback, for tests.

``openssl`` makes a small PKI in a temporary directory (an EC root, an EC intermediate "TSA CA",
an RSA-2048 and an EC P-256 TSA certificate with ``extendedKeyUsage=critical,timeStamping``,
one certificate without it, and an unrelated root), and a ``http.server`` in a thread on
127.0.0.1 answers each POSTed query by running ``openssl ts -reply`` on it. Routes:

``/tsa``       RSA TSA, chain included, signing-certificate-v2 (SHA-256)
``/tsa-leaf``  the same TSA, but only its own certificate in the token
``/tsa-ec``    ECDSA TSA (SHA-384 signature), signing-certificate v1 (SHA-1 cert id), own
               certificate only
``/tsa-legacy`` the RSA TSA, also accepting SHA-1 imprints
``/reject``    a TSA accepting only SHA-512 imprints: SHA-256 queries get status rejection
``/no-eku``    a granted response whose token is signed by a certificate without timeStamping
               (OpenSSL's ``cms -sign`` re-signing the TSTInfo; ``ts -reply`` refuses that)
``/tsa-pss``   the RSA TSA's TSTInfo re-signed by ``cms -sign`` with RSA-PSS (no ESS attribute)
``/replay``    answers every query with the response to the first one (a wrong nonce)
``/http-500``  HTTP 500; ``/garbage`` 200 with bytes that are not DER; ``/slow`` waits 5 s

Use ``local_tsa_server(workdir)`` as a context manager, or the session fixture ``local_tsa``.
"""

from __future__ import annotations

import secrets
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

TSA_SUBJECT = "/C=CN/O=Jiefen Tests/OU=Evidence/CN=Jiefen Test TSA"
TSA_NAME = "CN=Jiefen Test TSA,OU=Evidence,O=Jiefen Tests,C=CN"
EC_TSA_NAME = "CN=Jiefen Test TSA EC,OU=Evidence,O=Jiefen Tests,C=CN"
POLICY = "1.2.3.4.1"

_PKI_CONFIG = """\
[req]
distinguished_name = dn
prompt = no
[dn]
CN = placeholder
[v3_ca]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
[v3_tsa]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature,nonRepudiation
extendedKeyUsage = critical,timeStamping
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
[v3_no_eku]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature,nonRepudiation
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
"""

_TSA_SECTION = """\
[{name}]
serial = {dir}/serial
crypto_device = builtin
signer_cert = {dir}/{cert}
{certs}signer_key = {dir}/{key}
signer_digest = {signer_digest}
default_policy = {policy}
other_policies = 1.2.3.4.2
digests = {digests}
accuracy = secs:1, millisecs:500, microsecs:100
clock_precision_digits = 3
ordering = yes
tsa_name = yes
ess_cert_id_chain = no
ess_cert_id_alg = {ess_alg}
"""


def openssl_path() -> str:
    path = shutil.which("openssl")
    if path is None:
        pytest.fail("the `openssl` command is required for the RFC 3161 timestamp tests")
    return path


def der(tag: int, content: bytes) -> bytes:
    """One DER element."""
    length = len(content)
    if length < 0x80:
        return bytes([tag, length]) + content
    octets = length.to_bytes((length.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(octets)]) + octets + content


def granted_response(token: bytes) -> bytes:
    """A TimeStampResp with status granted around ``token``."""
    return der(0x30, der(0x30, b"\x02\x01\x00") + token)


@dataclass(frozen=True)
class LocalTSA:
    base_url: str
    root_ca_pem: bytes
    tsa_cert_pem: bytes
    intermediate_ca_pem: bytes
    ec_tsa_cert_pem: bytes
    no_eku_cert_pem: bytes
    tsa_cert_twin_pem: bytes
    """Same key, issuer and serial number as the RSA TSA certificate, other validity."""
    tsa_cert_expired_pem: bytes
    """The RSA TSA certificate's twin valid only in 2020."""
    unrelated_root_pem: bytes
    started_in: float
    """Seconds it took to make the PKI and start the server."""

    @property
    def url(self) -> str:
        return self.url_for("tsa")

    def url_for(self, route: str) -> str:
        return f"{self.base_url}/{route}"


class _OpenSSLTSA:
    def __init__(self, workdir: Path) -> None:
        self.dir = workdir
        self.openssl = openssl_path()
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.first_replay: bytes | None = None

    def run(self, *args: str) -> bytes:
        result = subprocess.run(
            [self.openssl, *args], cwd=self.dir, capture_output=True, check=False, timeout=60
        )
        if result.returncode != 0:
            raise RuntimeError(
                f"openssl {' '.join(args)} failed: {result.stderr.decode(errors='replace')}"
            )
        return result.stdout

    def make_pki(self) -> None:
        (self.dir / "pki.cnf").write_text(_PKI_CONFIG)
        (self.dir / "serial").write_text("01\n")
        self._key("root.key", ec=True)
        self._self_signed("root", "/C=CN/O=Jiefen Tests/CN=Jiefen Test Root CA")
        self._key("unrelated.key", ec=True)
        self._self_signed("unrelated", "/C=CN/O=Somebody Else/CN=Unrelated Root CA")
        self._key("intermediate.key", ec=True)
        self._issue("intermediate", "/C=CN/O=Jiefen Tests/CN=Jiefen Test TSA CA", "root", "v3_ca")
        self._key("tsa-rsa.key", ec=False)
        serial = self._issue("tsa-rsa", TSA_SUBJECT, "intermediate", "v3_tsa")
        self._issue("tsa-twin", "", "intermediate", "v3_tsa", csr="tsa-rsa", serial=serial, days=30)
        self._key("tsa-ec.key", ec=True)
        self._issue("tsa-ec", TSA_SUBJECT + " EC", "intermediate", "v3_tsa")
        self._issue("no-eku", "", "intermediate", "v3_no_eku", csr="tsa-ec")
        self._expired_twin()
        sections = [
            "[tsa]\ndefault_tsa = tsa\n",
            self._section("tsa", "tsa-rsa", "sha256", "sha256, sha384, sha512", "sha256"),
            self._section("tsa-leaf", "tsa-rsa", "sha256", "sha256", "sha256", with_chain=False),
            self._section("tsa-ec", "tsa-ec", "sha384", "sha256", "sha1", with_chain=False),
            self._section("tsa-legacy", "tsa-rsa", "sha256", "sha1, sha256", "sha256"),
            self._section("reject", "tsa-rsa", "sha256", "sha512", "sha256"),
        ]
        (self.dir / "ts.cnf").write_text("\n".join(sections))

    def _expired_twin(self) -> None:
        """The RSA TSA's certificate again (key, names, serial number, extensions) but valid
        only in 2020: OpenSSL 3.0's ``x509`` cannot backdate, so ``cryptography`` makes it."""
        tsa = x509.load_pem_x509_certificate(self.pem("tsa-rsa"))
        issuer_key = serialization.load_pem_private_key(
            (self.dir / "intermediate.key").read_bytes(), password=None
        )
        assert isinstance(issuer_key, ec.EllipticCurvePrivateKey)
        builder = (
            x509.CertificateBuilder()
            .subject_name(tsa.subject)
            .issuer_name(tsa.issuer)
            .public_key(tsa.public_key())
            .serial_number(tsa.serial_number)
            .not_valid_before(datetime(2020, 1, 1, tzinfo=UTC))
            .not_valid_after(datetime(2021, 1, 1, tzinfo=UTC))
        )
        for extension in tsa.extensions:
            builder = builder.add_extension(extension.value, critical=extension.critical)
        expired = builder.sign(issuer_key, hashes.SHA256())
        (self.dir / "tsa-expired.pem").write_bytes(expired.public_bytes(serialization.Encoding.PEM))

    def _section(
        self, name: str, cert: str, signer: str, digests: str, ess: str, *, with_chain: bool = True
    ) -> str:
        return _TSA_SECTION.format(
            name=name,
            dir=self.dir,
            certs=f"certs = {self.dir}/intermediate.pem\n" if with_chain else "",
            cert=f"{cert}.pem",
            key=f"{cert}.key",
            signer_digest=signer,
            policy=POLICY,
            digests=digests,
            ess_alg=ess,
        )

    def _key(self, name: str, *, ec: bool) -> None:
        option = "ec_paramgen_curve:P-256" if ec else "rsa_keygen_bits:2048"
        self.run("genpkey", "-algorithm", "EC" if ec else "RSA", "-pkeyopt", option, "-out", name)

    def _self_signed(self, name: str, subject: str) -> None:
        self.run(
            "req", "-config", "pki.cnf", "-new", "-x509", "-key", f"{name}.key",
            "-subj", subject, "-days", "3650", "-extensions", "v3_ca", "-sha256",
            "-out", f"{name}.pem",
        )  # fmt: skip

    def _issue(
        self,
        name: str,
        subject: str,
        issuer: str,
        extensions: str,
        *,
        csr: str | None = None,
        serial: str | None = None,
        days: int = 365,
    ) -> str:
        if csr is None:
            self.run(
                "req", "-config", "pki.cnf", "-new", "-key", f"{name}.key",
                "-subj", subject, "-out", f"{name}.csr",
            )  # fmt: skip
            csr = name
        serial = serial or "0x" + secrets.token_hex(12)
        self.run(
            "x509", "-req", "-in", f"{csr}.csr", "-CA", f"{issuer}.pem",
            "-CAkey", f"{issuer}.key", "-set_serial", serial, "-days", str(days),
            "-extfile", "pki.cnf", "-extensions", extensions, "-sha256", "-out", f"{name}.pem",
        )  # fmt: skip
        return serial

    def pem(self, name: str) -> bytes:
        return (self.dir / f"{name}.pem").read_bytes()

    def reply(self, section: str, query: bytes, *, token_only: bool = False) -> bytes:
        with self.lock, tempfile.TemporaryDirectory(dir=self.dir) as scratch:
            query_file = Path(scratch) / "query.tsq"
            out_file = Path(scratch) / "reply.der"
            query_file.write_bytes(query)
            args = ["ts", "-reply", "-config", "ts.cnf", "-section", section]
            args += ["-queryfile", str(query_file), "-out", str(out_file)]
            self.run(*args, *(["-token_out"] if token_only else []))
            return out_file.read_bytes()

    def resigned_response(self, query: bytes, signer: str, *options: str) -> bytes:
        """The RSA TSA's TSTInfo for ``query``, signed again by ``signer`` with ``cms -sign``:
        the way to get tokens ``openssl ts -reply`` will not make."""
        token = self.reply("tsa", query, token_only=True)
        with self.lock, tempfile.TemporaryDirectory(dir=self.dir) as scratch:
            token_file = Path(scratch) / "token.der"
            tst_info = Path(scratch) / "tstinfo.der"
            signed = Path(scratch) / "signed.der"
            token_file.write_bytes(token)
            self.run(
                "cms", "-verify", "-noverify", "-binary", "-inform", "DER",
                "-in", str(token_file), "-out", str(tst_info),
            )  # fmt: skip
            self.run(
                "cms", "-sign", "-binary", "-nodetach", "-nosmimecap", "-in", str(tst_info),
                "-econtent_type", "1.2.840.113549.1.9.16.1.4", "-signer", f"{signer}.pem",
                "-md", "sha256", "-outform", "DER", "-out", str(signed), *options,
            )  # fmt: skip
            return granted_response(signed.read_bytes())

    def answer(self, route: str, query: bytes) -> tuple[int, str, bytes]:
        reply_type = "application/timestamp-reply"
        if route in ("/tsa", "/tsa-leaf", "/tsa-ec", "/tsa-legacy", "/reject"):
            return 200, reply_type, self.reply(route[1:], query)
        if route == "/no-eku":
            return 200, reply_type, self.resigned_response(query, "no-eku", "-inkey", "tsa-ec.key")
        if route == "/tsa-pss":
            pss = ["-inkey", "tsa-rsa.key", "-keyopt", "rsa_padding_mode:pss"]
            pss += ["-keyopt", "rsa_pss_saltlen:32"]
            return 200, reply_type, self.resigned_response(query, "tsa-rsa", *pss)
        if route == "/replay":
            if self.first_replay is None:
                self.first_replay = self.reply("tsa", query)
            return 200, reply_type, self.first_replay
        if route == "/http-500":
            return 500, "text/plain", b"internal error\n"
        if route == "/garbage":
            return 200, "text/html", b"<html>this is not a timestamp</html>"
        if route == "/slow":
            self.stop.wait(5)
            return 200, reply_type, b""
        return 404, "text/plain", b"no such route\n"


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, tsa: _OpenSSLTSA) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.tsa = tsa

    def handle_error(self, request: object, client_address: object) -> None:
        """Clients that gave up (the timeout test) are not errors worth a traceback."""


class _Handler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        assert isinstance(self.server, _Server)
        query = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        try:
            status, content_type, body = self.server.tsa.answer(self.path, query)
        except RuntimeError as exc:
            status, content_type, body = 500, "text/plain", str(exc).encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@contextmanager
def local_tsa_server(workdir: Path) -> Iterator[LocalTSA]:
    """Make the PKI in ``workdir`` and serve the TSA on 127.0.0.1 until the block ends."""
    started = time.perf_counter()
    tsa = _OpenSSLTSA(workdir)
    tsa.make_pki()
    server = _Server(tsa)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    host, port = server.server_address[:2]
    try:
        yield LocalTSA(
            base_url=f"http://{host!s}:{port}",
            root_ca_pem=tsa.pem("root"),
            tsa_cert_pem=tsa.pem("tsa-rsa"),
            intermediate_ca_pem=tsa.pem("intermediate"),
            ec_tsa_cert_pem=tsa.pem("tsa-ec"),
            no_eku_cert_pem=tsa.pem("no-eku"),
            tsa_cert_twin_pem=tsa.pem("tsa-twin"),
            tsa_cert_expired_pem=tsa.pem("tsa-expired"),
            unrelated_root_pem=tsa.pem("unrelated"),
            started_in=time.perf_counter() - started,
        )
    finally:
        tsa.stop.set()
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture(scope="session", name="local_tsa")
def local_tsa_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalTSA]:
    """The local TSA, started once per test session."""
    with local_tsa_server(tmp_path_factory.mktemp("tsa")) as tsa:
        yield tsa
