"""The files of ``deploy/``, run for real.

- nginx: the shipped server file, changed only where a test on loopback must differ (ports,
  certificate, upstream port, log path), in front of a real ``jiefen serve``: TLS, the
  portal's security headers, the HTTP redirect, Socket.IO over WebSocket, ``/metrics``,
  streamed uploads and the body limit.
- systemd: ``systemd-analyze verify`` of the units; the portal unit's ``ExecStartPre`` and the
  backup unit's ``ExecStart`` run as systemd would run them.
- coturn: the shipped config on loopback ports; TURN allocations with the portal's own
  credentials, refused with a wrong or expired one, and no relay to private addresses.
- the env file: exactly the names the portal reads, and ``Settings.from_env`` accepts it.

nginx, coturn and systemd-analyze are Debian packages (nginx-light, coturn, systemd): outside
CI a missing one skips its test, under CI it fails.
"""

from __future__ import annotations

import asyncio
import configparser
import datetime
import ipaddress
import json
import os
import re
import shlex
import shutil
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import pytest
import socketio
from aioice import stun, turn
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from portal.evidence.blobs import parse_master_keys
from portal.evidence.log import load_log_key
from portal.meetings.ice import turn_credential
from portal.settings import Settings
from tests.conftest import ROOT, free_port, log_in, require_service

DEPLOY = ROOT / "deploy"
BIN = Path(sys.executable).parent / "jiefen"
NGINX = "/usr/sbin/nginx"
TURNSERVER = shutil.which("turnserver") or "/usr/bin/turnserver"
SYSTEMD_ANALYZE = shutil.which("systemd-analyze")
ADMIN_EMAIL = "admin@example.cn"
ADMIN_PASSWORD = "Deploy-Test-2026!"  # a throwaway instance's administrator
SESSION_COOKIE = "__Host-jiefen_session"


def swap(text: str, old: str, new: str) -> str:
    """Replace ``old``, which the shipped file must contain (else the test is out of date)."""
    assert old in text, f"{old!r} not found: update tests/test_deploy.py with deploy/"
    return text.replace(old, new)


def wait_until(check: Any, what: str, process: subprocess.Popen[Any], log: Path) -> None:
    deadline = time.monotonic() + 30
    while not check():
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not start:\n{log.read_text(errors='replace')}")
        time.sleep(0.1)


def tcp_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def stop(process: subprocess.Popen[Any]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# -- settings names ---------------------------------------------------------------------------


def names_read(path: Path) -> set[str]:
    """The environment variables a module reads: env.get("X"), env["X"], os.environ.get("X")."""
    source = path.read_text(encoding="utf-8")
    return set(re.findall(r"""(?:env|environ)(?:\.get\(|\[)\s*["']([A-Z][A-Z0-9_]*)["']""", source))


SETTINGS_NAMES = names_read(ROOT / "portal" / "settings.py")


def parse_env_file(path: Path) -> tuple[dict[str, str], dict[str, list[str]]]:
    """NAME=value lines as systemd's EnvironmentFile= reads them (and the comments above each)."""
    values: dict[str, str] = {}
    comments: dict[str, list[str]] = {}
    pending: list[str] = []
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line:
            pending = []
            continue
        if line.startswith("#"):
            pending.append(line.lstrip("#").strip())
            continue
        name, sep, value = line.partition("=")
        assert sep and re.fullmatch(r"[A-Z][A-Z0-9_]*", name), f"not NAME=value: {raw!r}"
        assert name not in values, f"{name} set twice"
        if len(value) >= 2 and value[0] == value[-1] == '"':
            value = value[1:-1]
        assert " #" not in value, f"{name}: a comment after a value becomes part of it"
        values[name] = value
        comments[name] = pending
        pending = []
    return values, comments


# -- a certificate for 127.0.0.1 --------------------------------------------------------------


@dataclass(frozen=True)
class Cert:
    cert: Path
    key: Path

    def client_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.cert))


@pytest.fixture(scope="module")
def cert(tmp_path_factory: pytest.TempPathFactory) -> Cert:
    folder = tmp_path_factory.mktemp("tls")
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(key, hashes.SHA256())
    )
    paths = Cert(folder / "fullchain.pem", folder / "privkey.pem")
    paths.cert.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    paths.key.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    paths.key.chmod(0o600)
    return paths


# -- nginx in front of jiefen serve -----------------------------------------------------------


@dataclass(frozen=True)
class Stack:
    https: str  # the portal through nginx, also its BASE_URL
    http_port: int
    https_port: int
    cert: Cert
    error_log: Path  # the server's error_log (level warn)


def nginx_main_config(tmp: Path, server_file: Path) -> str:
    """A minimal nginx.conf around the shipped server file, everything writable in ``tmp``."""
    built = subprocess.run([NGINX, "-V"], capture_output=True, text=True, check=True).stderr
    temp_paths = [f"client_body_temp_path {tmp}/client_body;", f"proxy_temp_path {tmp}/proxy;"]
    for module in ("fastcgi", "uwsgi", "scgi"):
        if f"--without-http_{module}_module" not in built:
            temp_paths.append(f"{module}_temp_path {tmp}/{module};")
    mime = "include /etc/nginx/mime.types;" if Path("/etc/nginx/mime.types").exists() else ""
    # As root, nginx's workers would run as nobody, who may not enter pytest's 0700 folders.
    user = "user root;" if os.geteuid() == 0 else ""
    return "\n".join(
        [
            "daemon off;",
            "worker_processes 1;",
            user,
            f"pid {tmp}/nginx.pid;",
            f"error_log {tmp}/main-error.log warn;",
            "events { worker_connections 256; }",
            "http {",
            f"    {mime}",
            f"    access_log {tmp}/access.log;",
            *(f"    {line}" for line in temp_paths),
            f"    include {server_file};",
            "}",
            "",
        ]
    )


def portal_env(var: Path, base_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in SETTINGS_NAMES}
    return {**env, "VAR_DIR": str(var), "BASE_URL": base_url}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, cert: Cert) -> Iterator[Stack]:
    if not Path(NGINX).exists():
        require_service("nginx", f"{NGINX} not installed (apt-get install nginx-light)")
    tmp = tmp_path_factory.mktemp("nginx")
    var = tmp_path_factory.mktemp("portal-var")
    http_port, https_port, app_port = free_port(), free_port(), free_port()
    base_url = f"https://127.0.0.1:{https_port}"

    conf = (DEPLOY / "nginx" / "jiefen.conf").read_text(encoding="utf-8")
    conf = swap(conf, "listen 80;", f"listen 127.0.0.1:{http_port};")
    conf = swap(conf, "listen [::]:80;", "")
    conf = swap(conf, "listen 443 ssl http2;", f"listen 127.0.0.1:{https_port} ssl http2;")
    conf = swap(conf, "listen [::]:443 ssl http2;", "")
    conf = swap(conf, "/etc/ssl/jiefen/fullchain.pem", str(cert.cert))
    conf = swap(conf, "/etc/ssl/jiefen/privkey.pem", str(cert.key))
    conf = swap(conf, "server 127.0.0.1:8000;", f"server 127.0.0.1:{app_port};")
    conf = swap(conf, "/var/log/nginx/jiefen.error.log", str(tmp / "jiefen-error.log"))
    server_file = tmp / "jiefen.conf"
    server_file.write_text(conf, encoding="utf-8")
    main_file = tmp / "nginx.conf"
    main_file.write_text(nginx_main_config(tmp, server_file), encoding="utf-8")
    nginx_cmd = [NGINX, "-p", f"{tmp}/", "-c", str(main_file)]
    checked = subprocess.run([*nginx_cmd, "-t"], capture_output=True, text=True, timeout=30)
    assert checked.returncode == 0, checked.stderr

    env = portal_env(var, base_url)
    created = subprocess.run(
        [
            BIN,
            "user",
            "create",
            "--role",
            "platform_admin",
            "--name",
            "管理员",
            "--email",
            ADMIN_EMAIL,
        ],
        env={**env, "JIEFEN_PASSWORD": ADMIN_PASSWORD},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert created.returncode == 0, created.stdout + created.stderr

    portal_log, nginx_log = var / "serve.log", tmp / "nginx.out"
    with portal_log.open("w") as plog, nginx_log.open("w") as nlog:
        portal = subprocess.Popen(
            [str(BIN), "serve", "--host", "127.0.0.1", "--port", str(app_port)],
            env=env,
            stdout=plog,
            stderr=subprocess.STDOUT,
        )
        nginx = subprocess.Popen(nginx_cmd, stdout=nlog, stderr=subprocess.STDOUT)
        try:
            wait_until(lambda: tcp_open(app_port), "jiefen serve", portal, portal_log)
            wait_until(lambda: tcp_open(https_port), "nginx", nginx, nginx_log)
            yield Stack(base_url, http_port, https_port, cert, tmp / "jiefen-error.log")
        finally:
            stop(nginx)
            stop(portal)
    errors = (tmp / "jiefen-error.log").read_text(errors="replace")
    assert "[crit]" not in errors and "[emerg]" not in errors, errors


def test_https_serves_the_portal_with_its_security_headers(stack: Stack) -> None:
    with httpx.Client(base_url=stack.https, verify=stack.cert.client_context()) as http:
        page = http.get("/")
        assert page.status_code == 200
        assert page.headers["content-security-policy"].startswith("default-src 'self'")
        assert "script-src 'nonce-" in page.headers["content-security-policy"]
        assert page.headers["strict-transport-security"].startswith("max-age=")
        assert page.headers["x-frame-options"] == "DENY"
        assert page.headers["server"] == "nginx"  # server_tokens off: no version
        assert page.http_version == "HTTP/1.1"
        # The portal sees https (X-Forwarded-Proto): its own redirects stay on https.
        slash = http.get("/accounts/login/")
        assert slash.status_code == 307
        assert slash.headers["location"].startswith("https://127.0.0.1")
        # Static files come from the portal too, with its headers.
        style = sorted((ROOT / "static" / "css").glob("*.css"))[0]
        static = http.get(f"/static/css/{style.name}", headers={"Accept-Encoding": "gzip"})
        assert static.status_code == 200
        assert static.headers["x-content-type-options"] == "nosniff"
        assert "content-security-policy" in static.headers
        assert static.content == style.read_bytes()
        # Compressed, unlike pages, which carry CSRF tokens (BREACH).
        assert static.headers.get("content-encoding") == "gzip"
        assert "content-encoding" not in http.get("/", headers={"Accept-Encoding": "gzip"}).headers


def test_tls_1_2_and_1_3_with_forward_secret_aead_suites_and_http2(stack: Stack) -> None:
    def handshake(maximum: ssl.TLSVersion) -> tuple[str, str, str | None]:
        context = stack.cert.client_context()
        context.maximum_version = maximum
        context.set_alpn_protocols(["h2", "http/1.1"])
        with (
            socket.create_connection(("127.0.0.1", stack.https_port), timeout=5) as raw,
            context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
        ):
            negotiated = tls.cipher()
            assert negotiated is not None
            cipher, version, _ = negotiated
            return version, cipher, tls.selected_alpn_protocol()

    assert handshake(ssl.TLSVersion.TLSv1_3)[::2] == ("TLSv1.3", "h2")
    version, cipher, _ = handshake(ssl.TLSVersion.TLSv1_2)
    assert version == "TLSv1.2"
    assert cipher.startswith("ECDHE-") and ("GCM" in cipher or "CHACHA20" in cipher), cipher


def test_plain_http_redirects_to_https(stack: Stack) -> None:
    response = httpx.get(f"http://127.0.0.1:{stack.http_port}/cases?page=2", timeout=5)
    assert response.status_code == 301
    assert response.headers["location"] == "https://mediation.example.cn/cases?page=2"


async def test_socketio_over_websocket_through_nginx(stack: Stack) -> None:
    context = stack.cert.client_context()
    async with httpx.AsyncClient(base_url=stack.https, verify=context) as http:
        await log_in(http, ADMIN_EMAIL, ADMIN_PASSWORD)  # Secure __Host- cookie over TLS
        cookie = f"{SESSION_COOKIE}={http.cookies[SESSION_COOKIE]}"
    headers = {"Cookie": cookie, "Origin": stack.https}

    welcome: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    # One HTTP session per client: python-engineio keeps the Cookie header in its jar.
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context)) as session:
        client = socketio.AsyncClient(reconnection=False, http_session=session)
        client.on("welcome", welcome.set_result)
        await client.connect(stack.https, transports=["websocket"], headers=headers)
        try:
            assert client.transport() == "websocket"
            data = await asyncio.wait_for(welcome, 10)
            assert data["role"] == "platform_admin"
        finally:
            await client.disconnect()

    # Without the cookie the upgrade still works; the portal then refuses the socket.
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context)) as session:
        anonymous = socketio.AsyncClient(reconnection=False, http_session=session)
        refusals: list[Any] = []
        anonymous.on("connect_error", refusals.append)
        with pytest.raises(socketio.exceptions.ConnectionError):
            await anonymous.connect(
                stack.https,
                transports=["websocket"],
                headers={"Origin": stack.https},
                wait_timeout=10,
            )
        assert refusals == [{"message": "authentication required"}]
    # TLS connections close with a round trip (close_notify): let it end before the test's
    # event loop does (aiohttp's advice for a graceful shutdown).
    await asyncio.sleep(0.25)


def test_metrics_for_loopback_through_forwarded_for(stack: Stack) -> None:
    with httpx.Client(base_url=stack.https, verify=stack.cert.client_context()) as http:
        metrics = http.get("/metrics")
        assert metrics.status_code == 200
        assert "jiefen_http_request_duration_seconds" in metrics.text
        # nginx lets this host in and tells the portal who asks (X-Forwarded-For): for another
        # address the portal answers 404, as to anyone it does not let scrape.
        forwarded = http.get("/metrics", headers={"X-Forwarded-For": "203.0.113.9"})
        assert forwarded.status_code == 404
        assert "jiefen_http" not in forwarded.text


def test_uploads_stream_through_and_the_body_limit_holds(stack: Stack) -> None:
    with httpx.Client(base_url=stack.https, verify=stack.cert.client_context()) as http:
        response = http.post(
            "/accounts/login",
            content=b"x" * (2 * 1024 * 1024),
            headers={"Content-Type": "application/octet-stream"},
        )
        assert response.status_code != 413
        assert "x-request-id" in response.headers  # answered by the portal, not nginx
    # Streamed to the portal: nginx did not spool it to a file first (it warns when it does).
    assert "buffered to a temporary file" not in stack.error_log.read_text(errors="replace")
    # More than client_max_body_size: refused from the headers, before any body is sent.
    context = stack.cert.client_context()
    with (
        socket.create_connection(("127.0.0.1", stack.https_port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        tls.sendall(
            b"POST /accounts/login HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: application/octet-stream\r\n"
            + f"Content-Length: {300 * 1024 * 1024}\r\n\r\n".encode()
        )
        status_line = tls.recv(4096).split(b"\r\n", 1)[0]
    assert status_line.startswith(b"HTTP/1.1 413"), status_line


def test_nginx_tells_every_location_who_asks_and_how() -> None:
    """Each proxied location sends X-Forwarded-For and -Proto (nginx does not merge a
    location's proxy_set_header list with the server's: one that sets any must set all)."""
    conf = (DEPLOY / "nginx" / "jiefen.conf").read_text(encoding="utf-8")
    server = re.sub(r"#.*", "", conf).split("listen 443 ssl http2;", 1)[1]
    blocks = server.split("location ")  # [0]: the server level, inherited by default
    for block in blocks:
        if "proxy_set_header" in block or block is blocks[0]:
            assert "proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;" in block
            assert "proxy_set_header X-Forwarded-Proto $scheme;" in block
            assert "proxy_set_header Host $host;" in block


def test_body_limit_leaves_room_for_the_largest_evidence_file() -> None:
    conf = (DEPLOY / "nginx" / "jiefen.conf").read_text(encoding="utf-8")
    limit = re.search(r"client_max_body_size\s+(\d+)m;", conf)
    assert limit is not None
    values, _ = parse_env_file(DEPLOY / "jiefen.env.example")
    assert int(limit.group(1)) >= int(values["EVIDENCE_MAX_MB"]) + 5
    assert Settings().evidence_max_mb == int(values["EVIDENCE_MAX_MB"])


# -- systemd ----------------------------------------------------------------------------------


def read_unit(name: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(DEPLOY / "systemd" / name, encoding="utf-8")
    return parser


def systemd_command(line: str, paths: dict[str, str]) -> list[str]:
    """An Exec line as systemd runs it: split, then "$$" and "%%" unescaped (no other
    specifier or variable may be used), then the install paths mapped to the test's."""
    words = []
    for word in shlex.split(line):
        assert not re.search(r"%[^%]", word.replace("%%", "")), f"a specifier in {word!r}"
        assert not re.search(r"\$[^$]", word.replace("$$", "")), f"a variable in {word!r}"
        word = word.replace("$$", "$").replace("%%", "%")
        for old, new in paths.items():
            word = word.replace(old, new)
        words.append(word)
    return words


def test_units_have_what_production_needs() -> None:
    portal = read_unit("jiefen.service")
    service = portal["Service"]
    assert service["User"] == "jiefen"
    assert service["WorkingDirectory"] == "/opt/jiefen"
    assert service["EnvironmentFile"] == "/etc/jiefen/jiefen.env"
    assert service["ExecStartPre"] == "/opt/jiefen/.venv/bin/jiefen db upgrade"
    assert service["ExecStart"] == (
        "/opt/jiefen/.venv/bin/jiefen serve --host 127.0.0.1 --port 8000 --workers 4"
    )
    assert service["Restart"] == "on-failure"
    assert service["KillSignal"] == "SIGTERM"
    assert service["TimeoutStopSec"] == "30"
    assert service["NoNewPrivileges"] == "yes"
    assert service["ProtectSystem"] == "strict"
    assert service["ReadWritePaths"] == "/var/lib/jiefen"
    assert service["PrivateTmp"] == service["ProtectHome"] == "yes"
    for key in ("After", "Wants"):
        assert set(portal["Unit"][key].split()) == {
            "network-online.target",
            "postgresql.service",
            "redis-server.service",
        }
    # The env file puts the data where the unit lets the portal write.
    values, _ = parse_env_file(DEPLOY / "jiefen.env.example")
    assert values["VAR_DIR"] == "/var/lib/jiefen"
    assert values["STORAGE_DIR"].startswith("/var/lib/jiefen/")

    backup = read_unit("jiefen-backup.service")
    assert backup["Service"]["Type"] == "oneshot"
    assert backup["Service"]["EnvironmentFile"] == "/etc/jiefen/jiefen.env"
    assert backup["Service"]["User"] == "jiefen"
    timer = read_unit("jiefen-backup.timer")
    assert timer["Timer"]["Unit"] == "jiefen-backup.service"
    assert timer["Timer"]["OnCalendar"]
    assert timer["Install"]["WantedBy"] == "timers.target"


def test_systemd_analyze_verify(tmp_path: Path) -> None:
    if SYSTEMD_ANALYZE is None:
        require_service("systemd-analyze", "not installed (apt-get install systemd)")
        return
    # verify checks that each command exists: point them at this checkout's virtualenv.
    names = ["jiefen.service", "jiefen-backup.service", "jiefen-backup.timer"]
    for name in names:
        text = (DEPLOY / "systemd" / name).read_text(encoding="utf-8")
        if name.endswith(".service"):
            text = swap(text, "/opt/jiefen/.venv/bin/jiefen", str(BIN))
        (tmp_path / name).write_text(text, encoding="utf-8")
    result = subprocess.run(
        [SYSTEMD_ANALYZE, "verify", *(str(tmp_path / name) for name in names)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "SYSTEMD_LOG_LEVEL": "notice"},
    )
    # verify exits 0 on unknown keys and bad values too: it must have nothing to say.
    output = "\n".join(
        line
        for line in (result.stdout + result.stderr).splitlines()
        if "$container" not in line  # a notice about the machine, not about the units
    )
    assert result.returncode == 0 and not output.strip(), output


def test_unit_commands_migrate_and_back_up(tmp_path: Path) -> None:
    """ExecStartPre of jiefen.service, then ExecStart of jiefen-backup.service, as systemd
    would run them."""
    var = tmp_path / "var"
    backups = tmp_path / "backups"
    (backups / "jiefen").mkdir(parents=True)
    (backups / "jiefen-keys").mkdir()
    paths = {"/opt/jiefen/.venv/bin/jiefen": str(BIN), "/var/backups/": f"{backups}/"}
    env = {
        **portal_env(var, "https://mediation.example.cn"),
        "BACKUP_PASSPHRASE": "a passphrase for the test",
    }
    pre = systemd_command(read_unit("jiefen.service")["Service"]["ExecStartPre"], paths)
    migrated = subprocess.run(pre, env=env, capture_output=True, text=True, timeout=120)
    assert migrated.returncode == 0, migrated.stderr
    backup = systemd_command(read_unit("jiefen-backup.service")["Service"]["ExecStart"], paths)
    assert backup[:2] == ["/bin/sh", "-c"]
    ran = subprocess.run(backup, env=env, capture_output=True, text=True, timeout=120)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    folders = list((backups / "jiefen").iterdir())
    keys = list((backups / "jiefen-keys").iterdir())
    assert len(folders) == len(keys) == 1
    stamp = datetime.datetime.now().strftime("%Y-%m-%d")
    assert folders[0].name.startswith(f"jiefen-{stamp}-")
    assert keys[0].name == folders[0].name + ".keys"
    manifest = json.loads((folders[0] / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["files"]


# -- coturn -----------------------------------------------------------------------------------


def coturn_options() -> list[tuple[str, str]]:
    options = []
    for raw in (DEPLOY / "coturn" / "turnserver.conf").read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            name, _, value = line.partition("=")
            options.append((name.strip(), value.strip()))
    return options


Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def denied_ranges() -> list[tuple[Address, Address]]:
    ranges: list[tuple[Address, Address]] = []
    for name, value in coturn_options():
        if name == "denied-peer-ip":
            low, _, high = value.partition("-")
            ranges.append((ipaddress.ip_address(low), ipaddress.ip_address(high or low)))
    return ranges


@pytest.mark.parametrize(
    "network",
    [
        "0.0.0.0/8",
        "10.0.0.0/8",
        "100.64.0.0/10",
        "127.0.0.0/8",
        "169.254.0.0/16",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "::1/128",
        "fc00::/7",
        "fe80::/10",
    ],
)
def test_coturn_denies_relaying_into(network: str) -> None:
    net = ipaddress.ip_network(network)
    first, last = net[0], net[-1]
    assert any(
        low.version == first.version and low <= first and last <= high  # type: ignore[operator]
        for low, high in denied_ranges()
    ), f"no denied-peer-ip covers {network}"


def test_coturn_uses_the_portals_credentials() -> None:
    options = dict(coturn_options())
    names = [name for name, _ in coturn_options()]
    assert "use-auth-secret" in names
    assert options["static-auth-secret"]
    assert {"no-multicast-peers", "no-cli", "fingerprint"} <= set(names)
    assert "allow-loopback-peers" not in names
    assert int(options["user-quota"]) > 0 and int(options["total-quota"]) > 0
    assert options["listening-port"] == "3478"
    assert options["tls-listening-port"] in ("443", "5349")
    values, _ = parse_env_file(DEPLOY / "jiefen.env.example")
    assert f"turn.example.cn:{options['listening-port']}" in values["TURN_URLS"]
    assert f"turns:turn.example.cn:{options['tls-listening-port']}" in values["TURN_URLS"]


@dataclass(frozen=True)
class Turn:
    port: int
    tls_port: int
    secret: str
    log: Path


@pytest.fixture(scope="module")
def coturn(tmp_path_factory: pytest.TempPathFactory, cert: Cert) -> Iterator[Turn]:
    if not Path(TURNSERVER).exists():
        require_service("coturn", f"{TURNSERVER} not installed (apt-get install coturn)")
    tmp = tmp_path_factory.mktemp("coturn")
    port, tls_port = free_port(), free_port()
    conf = (DEPLOY / "coturn" / "turnserver.conf").read_text(encoding="utf-8")
    conf = swap(conf, "\nlistening-port=3478\n", f"\nlistening-port={port}\n")
    conf = re.sub(r"\ntls-listening-port=\d+\n", f"\ntls-listening-port={tls_port}\n", conf)
    conf = swap(conf, "203.0.113.10", "127.0.0.1")
    conf = swap(conf, "/etc/ssl/turn.example.cn/fullchain.pem", str(cert.cert))
    conf = swap(conf, "/etc/ssl/turn.example.cn/privkey.pem", str(cert.key))
    (tmp / "turnserver.conf").write_text(conf, encoding="utf-8")
    log = tmp / "turnserver.log"
    with log.open("w") as out:
        # Its pid file and (unused) user database in tmp, not /var/run and /var/lib/turn.
        files = ["--pidfile", f"{tmp}/turnserver.pid", "--db", f"{tmp}/turndb"]
        server = subprocess.Popen(
            [TURNSERVER, "-c", f"{tmp}/turnserver.conf", *files],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_until(lambda: tcp_open(port) and tcp_open(tls_port), "coturn", server, log)
            yield Turn(port, tls_port, dict(coturn_options())["static-auth-secret"], log)
        finally:
            stop(server)


async def allocate(
    server: tuple[str, int],
    username: str,
    password: str,
    tls: ssl.SSLContext | None = None,
    peers: tuple[str, ...] = (),
) -> tuple[tuple[str, int], dict[str, int | None]]:
    """A TURN allocation (UDP, or TCP over TLS), then a channel to each peer: the relayed
    address and, per peer, None when allowed or the error code."""
    loop = asyncio.get_running_loop()
    protocol: turn.TurnClientUdpProtocol | turn.TurnClientTcpProtocol
    credentials = (server, username, password, 600, 500)  # lifetime, channel refresh time
    if tls is None:
        _, protocol = await loop.create_datagram_endpoint(
            lambda: turn.TurnClientUdpProtocol(*credentials), remote_addr=server
        )
    else:
        _, protocol = await loop.create_connection(
            lambda: turn.TurnClientTcpProtocol(*credentials),
            host=server[0],
            port=server[1],
            ssl=tls,
        )
    try:
        relayed = await asyncio.wait_for(protocol.connect(), 10)
        outcome: dict[str, int | None] = {}
        for number, peer in enumerate(peers):
            try:
                await asyncio.wait_for(protocol.channel_bind(0x4000 + number, (peer, 9)), 10)
                outcome[peer] = None
            except stun.TransactionFailed as exc:
                outcome[peer] = exc.response.error_code
        await asyncio.wait_for(protocol.delete(), 10)
        return relayed, outcome
    finally:
        protocol.transport.close()
        if tls is not None:
            await asyncio.sleep(0.25)  # the TLS close_notify round trip


async def test_coturn_relays_with_the_portals_credentials_only(coturn: Turn, cert: Cert) -> None:
    # coturn understood every option (it logs and skips one it does not know).
    assert "Bad configuration" not in coturn.log.read_text(errors="replace")
    server = ("127.0.0.1", coturn.port)
    expires = int(time.time()) + 600
    credential = turn_credential(coturn.secret, 42, expires)
    private = ("10.1.2.3", "172.16.5.4", "192.168.1.1", "127.0.0.1", "169.254.1.1", "100.64.0.1")
    relayed, outcome = await allocate(
        server, credential.username, credential.password, peers=(*private, "203.0.113.7")
    )
    assert relayed[0] == "127.0.0.1"
    assert 49160 <= relayed[1] <= 49999
    # Private peers are refused (403 Forbidden), a public one is allowed.
    assert outcome == {**dict.fromkeys(private, 403), "203.0.113.7": None}

    # TURN over TLS, as browsers behind HTTPS-only firewalls use it.
    relayed, _ = await allocate(
        ("127.0.0.1", coturn.tls_port),
        credential.username,
        credential.password,
        tls=cert.client_context(),
    )
    assert relayed[0] == "127.0.0.1"

    wrong = turn_credential("another secret", 42, expires)
    expired = turn_credential(coturn.secret, 42, int(time.time()) - 60)
    for bad in (wrong, expired):
        with pytest.raises(stun.TransactionFailed) as refused:
            await allocate(server, bad.username, bad.password)
        assert refused.value.response.error_code == 401


# -- the env file -----------------------------------------------------------------------------


def test_env_example_sets_exactly_what_the_portal_reads() -> None:
    values, _ = parse_env_file(DEPLOY / "jiefen.env.example")
    cli_names = names_read(ROOT / "portal" / "cli.py")
    assert "BACKUP_PASSPHRASE" in cli_names
    unknown = set(values) - SETTINGS_NAMES - {"BACKUP_PASSPHRASE"}
    assert not unknown, f"not read by the portal: {sorted(unknown)}"
    missing = SETTINGS_NAMES - set(values)
    assert not missing, f"settings missing from jiefen.env.example: {sorted(missing)}"
    # And every variable of the README's Configuration table.
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    table = readme.split("## Configuration", 1)[-1].split("\n## ", 1)[0]
    documented: set[str] = set()
    for first_cell in re.findall(r"^\|([^|]*)\|", table, re.MULTILINE):
        documented |= set(re.findall(r"`([A-Z][A-Z0-9_]+)`", first_cell))
    assert documented, "no Configuration table in README.md"
    assert documented <= set(values), f"missing: {sorted(documented - set(values))}"


def test_env_example_builds_the_settings(tmp_path: Path) -> None:
    path = DEPLOY / "jiefen.env.example"
    values, comments = parse_env_file(path)
    # A shell reads the file the same way (operators run `jiefen` with it: set -a; . file).
    shell = subprocess.run(
        ["/bin/sh", "-c", 'set -a; . "$1"; exec env -0', "sh", str(path)],
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
        capture_output=True,
        text=True,
        check=True,
    )
    from_shell = dict(item.split("=", 1) for item in shell.stdout.split("\0") if "=" in item)
    assert {name: from_shell.get(name) for name in values} == values

    # Each CHANGE_ME with a "generate:" comment gets a value from that very command.
    path_env = f"{Path(sys.executable).parent}:{os.environ.get('PATH', '/usr/bin:/bin')}"
    env = dict(values)
    for name, value in values.items():
        commands = [c.split(":", 1)[1].strip() for c in comments[name] if c.startswith("generate:")]
        if "CHANGE_ME" not in value:
            assert not commands, f"{name} has a generate: comment but no CHANGE_ME"
            continue
        if not commands:
            continue  # a password of another system (database, SMTP): any text will do
        generated = subprocess.run(
            ["/bin/sh", "-c", commands[0]],
            env={**os.environ, "PATH": path_env, "VAR_DIR": str(tmp_path / "gen")},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert generated.returncode == 0, generated.stderr
        env[name] = generated.stdout.strip()
        assert env[name], f"{name}: {commands[0]!r} printed nothing"
    env["VAR_DIR"] = str(tmp_path / "var")
    env["STORAGE_DIR"] = str(tmp_path / "var" / "storage")

    settings = Settings.from_env(env)
    assert settings.base_url == "https://mediation.example.cn"
    assert settings.secure_cookies
    assert settings.database_url.startswith("postgresql+asyncpg://")
    assert settings.redis_url and settings.log_format == "json"
    assert settings.turn_urls and settings.turn_secret == env["TURN_SECRET"]
    assert settings.log_name == "mediation.example.cn/evidence-log"
    # The generated keys are what the portal accepts.
    assert parse_master_keys(settings.blob_master_keys)
    assert settings.current_blob_key_id in parse_master_keys(settings.blob_master_keys)
    load_log_key(tmp_path / "unused", settings.log_name, settings.log_signing_key)
    assert len(env["BACKUP_PASSPHRASE"]) >= 12
    # Nothing was generated into VAR_DIR: every key came from the file.
    assert not (tmp_path / "var").exists() or not any((tmp_path / "var").iterdir())
