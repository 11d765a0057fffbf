"""Settings: the only module that reads the environment.

Every setting has a default that works on a developer's machine; production overrides them
through environment variables (documented in the README).
"""

from __future__ import annotations

import base64
import os
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

SUPPORTED_LOCALES = ("zh_CN", "en")


def _read_or_create_key(path: Path) -> str:
    """Return the key stored at ``path``, generating it once (mode 0600) when missing."""
    if path.exists():
        value = path.read_text(encoding="ascii").strip()
        if value:
            return value
    path.parent.mkdir(parents=True, exist_ok=True)
    value = secrets.token_urlsafe(48)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as fh:
        fh.write(value + "\n")
    return value


def _read_or_create_blob_key(var_dir: Path) -> str:
    """The development blob master key list (``k1:<base64>``), kept in var/ (mode 0600)."""
    path = var_dir / "blob_master_keys"
    if path.exists():
        value = path.read_text(encoding="ascii").strip()
        if value:
            return value
    path.parent.mkdir(parents=True, exist_ok=True)
    value = "k1:" + base64.urlsafe_b64encode(secrets.token_bytes(32)).decode().rstrip("=")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as fh:
        fh.write(value + "\n")
    return value


def _audit_retention(value: str) -> int:
    days = int(value)
    if days < 183:
        raise ValueError("AUDIT_RETENTION_DAYS must be at least 183 (six months)")
    return days


def _notification_retention(value: str) -> int:
    days = int(value)
    if days < 90:
        raise ValueError("NOTIFICATION_RETENTION_DAYS must be at least 90")
    return days


def _person_retention(value: str) -> int:
    days = int(value)
    if days != 0 and days < 365:
        raise ValueError("PERSON_RETENTION_DAYS must be 0 (never by age) or at least 365")
    return days


def _url_list(value: str, schemes: tuple[str, ...]) -> tuple[str, ...]:
    """A comma-separated list of ICE server URLs, each with one of ``schemes``."""
    urls = tuple(u.strip() for u in value.split(",") if u.strip())
    for url in urls:
        if not url.startswith(schemes):
            raise ValueError(f"{url!r} is not a {' or '.join(schemes)} URL")
    return urls


@dataclass(frozen=True)
class SmtpSettings:
    host: str = "127.0.0.1"
    port: int = 25
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    sender: str = "Jiefen <noreply@localhost>"
    # "none", "starttls" or "tls" (implicit TLS, usually port 465)
    security: str = "none"


@dataclass(frozen=True)
class Settings:
    database_url: str = "sqlite+aiosqlite:///var/jiefen.db"
    secret_key: str = field(default="", repr=False)
    data_key: str = field(default="", repr=False)
    var_dir: Path = Path("var")
    storage_dir: Path = Path("var/storage")
    redis_url: str | None = None
    # Bearer token for /metrics from other hosts (without it, only loopback may scrape).
    metrics_token: str | None = None
    # Names this deployment's Redis channels, so deployments (or test workers) sharing one
    # Redis never hear each other's rooms.
    redis_prefix: str = "jiefen"
    smtp: SmtpSettings = field(default_factory=SmtpSettings)
    base_url: str = "http://127.0.0.1:8000"
    default_locale: str = "zh_CN"
    time_zone: str = "Asia/Shanghai"
    session_idle_minutes: int = 120
    session_absolute_hours: int = 12
    invitation_days: int = 7
    # The audit trail is kept this long (never less than six months), then deleted; its
    # digests stay in the evidence log.
    audit_retention_days: int = 365
    # Notifications (and their delivery receipts) and used invitations are kept this long.
    notification_retention_days: int = 730
    # A consumer's personal data is erased this long after their last case ended and their last
    # login (0: never by age, only on request). See portal.retention.
    person_retention_days: int = 1825
    # The firm API: calls per token and window ("600/minute"), the largest JSON body.
    api_rate_limit: str = "600/minute"
    api_max_json_kb: int = 64
    # Webhooks may go to http:// and private addresses (tests, intranets); never on the internet.
    webhook_allow_private: bool = False
    log_level: str = "INFO"
    # "text" (a line for people) or "json" (one object a line, for a log collector).
    log_format: str = "text"
    # Evidence: blob master keys "id:base64,..." (new blobs use blob_master_key_id), the upload
    # limit per file, the log's name and signing key, the time-stamping authority.
    blob_master_keys: str = field(default="", repr=False)
    blob_master_key_id: str = ""
    evidence_max_mb: int = 200
    # The largest file of cases a firm or committee may import (cases.imports).
    import_max_mb: int = 50
    log_origin: str = ""
    log_signing_key: str | None = field(default=None, repr=False)
    tsa_url: str | None = None
    tsa_ca_file: Path | None = None
    checkpoint_interval: float = 60.0
    # Live sessions' media: STUN and TURN servers handed to browsers. TURN credentials are
    # time-limited (the TURN REST form) and signed with the secret shared with coturn.
    stun_urls: tuple[str, ...] = ()
    turn_urls: tuple[str, ...] = ()
    turn_secret: str | None = field(default=None, repr=False)
    turn_ttl_seconds: int = 86400
    # Recordings of sessions made at once by one server process (each decodes its tracks).
    recording_limit: int = 2

    def __post_init__(self) -> None:
        if self.turn_urls and not self.turn_secret:
            raise ValueError("TURN_URLS needs TURN_SECRET (coturn's static-auth-secret)")
        if not 60 <= self.turn_ttl_seconds <= 7 * 86400:
            raise ValueError("TURN_TTL_SECONDS must be between 60 and 604800")
        if not 0 <= self.recording_limit <= 100:
            raise ValueError("RECORDING_LIMIT must be between 0 and 100")
        if not re.fullmatch(r"[1-9][0-9]*/(second|minute|hour)", self.api_rate_limit):
            raise ValueError(
                "API_RATE_LIMIT must read like 600/minute (per second, minute or hour)"
            )
        if not 1 <= self.api_max_json_kb <= 10240:
            raise ValueError("API_MAX_JSON_KB must be between 1 and 10240")

    @property
    def secure_cookies(self) -> bool:
        return urlsplit(self.base_url).scheme == "https"

    @property
    def session_cookie_name(self) -> str:
        # The __Host- prefix makes browsers insist on Secure, Path=/ and no Domain.
        return "__Host-jiefen_session" if self.secure_cookies else "jiefen_session"

    @property
    def evidence_max_bytes(self) -> int:
        return self.evidence_max_mb * 1024 * 1024

    @property
    def current_blob_key_id(self) -> str:
        """The master key for new blobs: BLOB_MASTER_KEY_ID, else the last one listed."""
        if self.blob_master_key_id:
            return self.blob_master_key_id
        entries = [e for e in self.blob_master_keys.split(",") if e.strip()]
        return entries[-1].split(":", 1)[0].strip() if entries else ""

    @property
    def log_name(self) -> str:
        """The evidence log's origin line (and checkpoint key name)."""
        if self.log_origin:
            return self.log_origin
        host = urlsplit(self.base_url).netloc or "localhost"
        return f"{host}/evidence-log"

    @property
    def recordings_dir(self) -> Path:
        """Where recordings are written while they are made (sealed, they become blobs)."""
        return self.storage_dir / "recordings"

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        var_dir = Path(env.get("VAR_DIR", "var"))
        default_locale = env.get("DEFAULT_LOCALE", "zh_CN").replace("-", "_")
        if default_locale not in SUPPORTED_LOCALES:
            raise ValueError(f"DEFAULT_LOCALE must be one of {', '.join(SUPPORTED_LOCALES)}")
        smtp = SmtpSettings(
            host=env.get("SMTP_HOST", "127.0.0.1"),
            port=int(env.get("SMTP_PORT", "25")),
            username=env.get("SMTP_USERNAME") or None,
            password=env.get("SMTP_PASSWORD") or None,
            sender=env.get("SMTP_FROM", "Jiefen <noreply@localhost>"),
            security=env.get("SMTP_SECURITY", "none"),
        )
        if smtp.security not in {"none", "starttls", "tls"}:
            raise ValueError("SMTP_SECURITY must be none, starttls or tls")
        return cls(
            database_url=env.get("DATABASE_URL", f"sqlite+aiosqlite:///{var_dir}/jiefen.db"),
            secret_key=env.get("SECRET_KEY") or _read_or_create_key(var_dir / "secret_key"),
            data_key=env.get("DATA_KEY") or _read_or_create_key(var_dir / "data_key"),
            var_dir=var_dir,
            storage_dir=Path(env.get("STORAGE_DIR", str(var_dir / "storage"))),
            redis_url=env.get("REDIS_URL") or None,
            metrics_token=env.get("METRICS_TOKEN") or None,
            redis_prefix=env.get("REDIS_PREFIX", "jiefen"),
            smtp=smtp,
            base_url=env.get("BASE_URL", "http://127.0.0.1:8000").rstrip("/"),
            default_locale=default_locale,
            time_zone=env.get("TIME_ZONE", "Asia/Shanghai"),
            session_idle_minutes=int(env.get("SESSION_IDLE_MINUTES", "120")),
            session_absolute_hours=int(env.get("SESSION_ABSOLUTE_HOURS", "12")),
            api_rate_limit=env.get("API_RATE_LIMIT", "600/minute"),
            api_max_json_kb=int(env.get("API_MAX_JSON_KB", "64")),
            webhook_allow_private=env.get("WEBHOOK_ALLOW_PRIVATE", "") in ("1", "true", "yes"),
            invitation_days=int(env.get("INVITATION_DAYS", "7")),
            audit_retention_days=_audit_retention(env.get("AUDIT_RETENTION_DAYS", "365")),
            notification_retention_days=_notification_retention(
                env.get("NOTIFICATION_RETENTION_DAYS", "730")
            ),
            person_retention_days=_person_retention(env.get("PERSON_RETENTION_DAYS", "1825")),
            log_level=env.get("LOG_LEVEL", "INFO").upper(),
            log_format="json" if env.get("LOG_FORMAT", "").lower() == "json" else "text",
            blob_master_keys=env.get("BLOB_MASTER_KEYS") or _read_or_create_blob_key(var_dir),
            blob_master_key_id=env.get("BLOB_MASTER_KEY_ID", ""),
            evidence_max_mb=int(env.get("EVIDENCE_MAX_MB", "200")),
            import_max_mb=int(env.get("IMPORT_MAX_MB", "50")),
            log_origin=env.get("LOG_ORIGIN", ""),
            log_signing_key=env.get("LOG_SIGNING_KEY") or None,
            tsa_url=env.get("TSA_URL") or None,
            tsa_ca_file=Path(env["TSA_CA_FILE"]) if env.get("TSA_CA_FILE") else None,
            checkpoint_interval=float(env.get("CHECKPOINT_INTERVAL", "60")),
            stun_urls=_url_list(env.get("STUN_URLS", ""), ("stun:", "stuns:")),
            turn_urls=_url_list(env.get("TURN_URLS", ""), ("turn:", "turns:")),
            turn_secret=env.get("TURN_SECRET") or None,
            turn_ttl_seconds=int(env.get("TURN_TTL_SECONDS", "86400")),
            recording_limit=int(env.get("RECORDING_LIMIT", "2")),
        )

    def ensure_dirs(self) -> None:
        self.var_dir.mkdir(parents=True, exist_ok=True)
        self.storage_dir.mkdir(parents=True, exist_ok=True)
        if self.is_sqlite and ":///" in self.database_url:
            db_path = self.database_url.split(":///", 1)[1]
            if db_path and db_path != ":memory:":
                Path(db_path).parent.mkdir(parents=True, exist_ok=True)
