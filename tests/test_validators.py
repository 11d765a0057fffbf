from __future__ import annotations

import pytest

from portal.validators import (
    ValidationError,
    clean_credit_code,
    clean_email,
    clean_new_password,
    clean_phone,
    clean_text,
    uscc_check_character,
)
from tests.factories import credit_code


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("13812345678", "13812345678"),
        ("+86 138-1234-5678", "13812345678"),
        ("0086 19912345678", "19912345678"),
    ],
)
def test_phone_accepts_mainland_mobiles(raw: str, clean: str) -> None:
    assert clean_phone(raw) == clean


@pytest.mark.parametrize("raw", ["", "12812345678", "1381234567", "138123456789", "abcdefghijk"])
def test_phone_rejects_malformed(raw: str) -> None:
    with pytest.raises(ValidationError):
        clean_phone(raw)


def test_email_normalised_and_checked() -> None:
    assert clean_email(" Zhang.San@Example.COM ") == "zhang.san@example.com"
    for bad in ["", "zhang", "zhang@", "@example.com", "a b@example.com"]:
        with pytest.raises(ValidationError):
            clean_email(bad)


@pytest.mark.parametrize(
    "weak",
    ["short", "123456789", "password123", "qwertyuiop", "woaini1314", "aaaaaaaaaaaa", "1212121212"],
)
def test_weak_passwords_refused(weak: str) -> None:
    with pytest.raises(ValidationError):
        clean_new_password(weak)


def test_strong_password_accepted() -> None:
    assert clean_new_password("Tea-Garden-1987") == "Tea-Garden-1987"


@pytest.mark.parametrize(
    "code",
    # Published codes of well-known companies, and a generated one.
    ["91440300708461136T", "91110000802100433B", "91310000132149237G"],
)
def test_real_credit_codes_pass(code: str) -> None:
    assert clean_credit_code(code) == code


def test_credit_code_check_character() -> None:
    code = credit_code(7)
    assert clean_credit_code(code.lower()) == code
    wrong = code[:17] + ("0" if code[17] != "0" else "1")
    with pytest.raises(ValidationError) as info:
        clean_credit_code(wrong)
    assert "check character" in info.value.message.msgid
    for bad in ["", "9131000", "91310000MA1G00001I", "9131000MA1G0000O15"]:
        with pytest.raises(ValidationError):
            clean_credit_code(bad)


def test_check_character_covers_the_zero_case() -> None:
    # A body whose weighted sum is a multiple of 31 takes check character "0", not 31.
    body = next(
        f"9131000012345{i:04d}"
        for i in range(10000)
        if uscc_check_character(f"9131000012345{i:04d}") == "0"
    )
    assert clean_credit_code(body + "0").endswith("0")


def test_text_limits_and_control_characters() -> None:
    assert clean_text("  你好 ", max_length=5) == "你好"
    with pytest.raises(ValidationError):
        clean_text("", max_length=5)
    assert clean_text("", max_length=5, required=False) == ""
    with pytest.raises(ValidationError):
        clean_text("x" * 6, max_length=5)
    with pytest.raises(ValidationError):
        clean_text("a\x00b", max_length=5)
