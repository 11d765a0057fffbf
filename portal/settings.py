"""Settings: the only module that reads the environment.

Every setting has a default that works on a developer's machine; production overrides them
through environment variables (documented in the README).
"""

from __future__ import annotations

import os
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
    smtp: SmtpSettings = field(default_factory=SmtpSettings)
    base_url: str = "http://127.0.0.1:8000"
    default_locale: str = "zh_CN"
    time_zone: str = "Asia/Shanghai"
    session_idle_minutes: int = 120
    session_absolute_hours: int = 12
    invitation_days: int = 7
    log_level: str = "INFO"

    @property
    def secure_cookies(self) -> bool:
        return urlsplit(self.base_url).scheme == "https"

    @property
    def session_cookie_name(self) -> str:
        # The __Host- prefix makes browsers insist on Secure, Path=/ and no Domain.
        return "__Host-jiefen_session" if self.secure_cookies else "jiefen_session"

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
            smtp=smtp,
            base_url=env.get("BASE_URL", "http://127.0.0.1:8000").rstrip("/"),
            default_locale=default_locale,
            time_zone=env.get("TIME_ZONE", "Asia/Shanghai"),
            session_idle_minutes=int(env.get("SESSION_IDLE_MINUTES", "120")),
            session_absolute_hours=int(env.get("SESSION_ABSOLUTE_HOURS", "12")),
            invitation_days=int(env.get("INVITATION_DAYS", "7")),
            log_level=env.get("LOG_LEVEL", "INFO").upper(),
        )

    def ensure_dirs(self) -> None:
        self.var_dir.mkdir(parents=True, exist_ok=True)
        self.storage_dir.mkdir(parents=True, exist_ok=True)
        if self.is_sqlite and ":///" in self.database_url:
            db_path = self.database_url.split(":///", 1)[1]
            if db_path and db_path != ":memory:":
                Path(db_path).parent.mkdir(parents=True, exist_ok=True)
