from __future__ import annotations

import stat
from pathlib import Path

import pytest

from portal.settings import Settings


def test_keys_generated_once_into_var(tmp_path: Path) -> None:
    env = {"VAR_DIR": str(tmp_path / "var")}
    first = Settings.from_env(env)
    second = Settings.from_env(env)
    assert first.secret_key == second.secret_key and len(first.secret_key) >= 60
    assert first.data_key != first.secret_key
    key_file = tmp_path / "var" / "secret_key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert first.database_url == f"sqlite+aiosqlite:///{tmp_path}/var/jiefen.db"
    assert first.redis_url is None and first.time_zone == "Asia/Shanghai"
    assert first.default_locale == "zh_CN"


def test_environment_overrides(tmp_path: Path) -> None:
    settings = Settings.from_env(
        {
            "VAR_DIR": str(tmp_path),
            "SECRET_KEY": "s" * 40,
            "DATA_KEY": "d" * 40,
            "DATABASE_URL": "postgresql+asyncpg://u@h/db",
            "REDIS_URL": "redis://r:6379/0",
            "BASE_URL": "https://jiefen.example.cn/",
            "DEFAULT_LOCALE": "en",
            "SMTP_HOST": "smtp.example.cn",
            "SMTP_PORT": "465",
            "SMTP_SECURITY": "tls",
            "STORAGE_DIR": str(tmp_path / "blobs"),
            "RECORDING_LIMIT": "5",
        }
    )
    assert settings.secret_key == "s" * 40
    assert settings.base_url == "https://jiefen.example.cn"
    assert settings.secure_cookies and settings.session_cookie_name.startswith("__Host-")
    assert settings.smtp.port == 465 and settings.smtp.security == "tls"
    assert settings.storage_dir == tmp_path / "blobs"
    assert settings.recording_limit == 5
    assert settings.recordings_dir == tmp_path / "blobs" / "recordings"
    assert not (tmp_path / "secret_key").exists()


@pytest.mark.parametrize(
    ("name", "value"),
    [("DEFAULT_LOCALE", "fr"), ("SMTP_SECURITY", "maybe"), ("RECORDING_LIMIT", "-1")],
)
def test_bad_settings_refused(tmp_path: Path, name: str, value: str) -> None:
    with pytest.raises(ValueError, match=name):
        Settings.from_env({"VAR_DIR": str(tmp_path), name: value})
