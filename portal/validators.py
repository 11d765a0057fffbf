"""Field validators shared by forms. Each returns the cleaned value or raises ValidationError."""

from __future__ import annotations

import gzip
import re
from functools import cache
from pathlib import Path

from email_validator import EmailNotValidError, validate_email

from portal.i18n import Msg, _l

PASSWORD_MIN_LENGTH = 10
_PHONE_RE = re.compile(r"^1[3-9]\d{9}$")
# GB 32100-2015: 18 characters from 0-9 and 21 capitals (no I, O, Z, S, V).
USCC_ALPHABET = "0123456789ABCDEFGHJKLMNPQRTUWXY"
_USCC_WEIGHTS = (1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28)
_COMMON_PASSWORDS = Path(__file__).parent / "accounts" / "data" / "common-passwords.txt.gz"
# Frequent in Chinese leaks and missing from the English-language list.
_EXTRA_COMMON = {
    "woaini1314",
    "woaini520",
    "qq123456789",
    "a123456789",
    "1qaz2wsx3edc",
    "zxcvbnm123",
    "abc123456789",
    "aa123456789",
    "5201314520",
    "1314520520",
    "jiefen123456",
}


class ValidationError(ValueError):
    def __init__(self, message: Msg) -> None:
        super().__init__(message.msgid)
        self.message = message


def clean_phone(value: str) -> str:
    """A mainland mobile number: 11 digits starting 13-19; spaces, dashes and +86 allowed."""
    digits = re.sub(r"[\s-]", "", value or "")
    if digits.startswith("+86"):
        digits = digits[3:]
    elif digits.startswith("0086"):
        digits = digits[4:]
    if not _PHONE_RE.match(digits):
        raise ValidationError(_l("Enter an 11-digit mainland mobile number, such as 13812345678."))
    return digits


def clean_email(value: str) -> str:
    try:
        result = validate_email((value or "").strip(), check_deliverability=False)
    except EmailNotValidError:
        raise ValidationError(
            _l("Enter a valid email address, such as name@example.com.")
        ) from None
    return result.normalized.lower()


@cache
def _common_passwords() -> frozenset[str]:
    with gzip.open(_COMMON_PASSWORDS, "rt", encoding="utf-8") as fh:
        return frozenset(line.strip() for line in fh if line.strip()) | _EXTRA_COMMON


def clean_new_password(value: str) -> str:
    if len(value or "") < PASSWORD_MIN_LENGTH:
        raise ValidationError(
            _l("Use at least {count} characters for your password.", count=PASSWORD_MIN_LENGTH)
        )
    if len(value) > 200:
        raise ValidationError(_l("Use at most {count} characters for your password.", count=200))
    if value.lower() in _common_passwords() or len(set(value)) < 4:
        raise ValidationError(
            _l("This password is too common and easy to guess. Choose another one.")
        )
    return value


def uscc_check_character(first17: str) -> str:
    total = sum(USCC_ALPHABET.index(c) * w for c, w in zip(first17, _USCC_WEIGHTS, strict=True))
    return USCC_ALPHABET[(31 - total % 31) % 31]


def clean_credit_code(value: str) -> str:
    """统一社会信用代码 checked with its GB 32100-2015 check character."""
    code = re.sub(r"\s", "", value or "").upper()
    if len(code) != 18 or any(c not in USCC_ALPHABET for c in code):
        raise ValidationError(
            _l("A unified social credit code has 18 characters: digits and capital letters.")
        )
    if uscc_check_character(code[:17]) != code[17]:
        raise ValidationError(
            _l("This unified social credit code is not valid: its check character does not match.")
        )
    return code


def clean_text(value: str, *, max_length: int, required: bool = True) -> str:
    text = (value or "").strip()
    if required and not text:
        raise ValidationError(_l("This field is required."))
    if len(text) > max_length:
        raise ValidationError(_l("Use at most {count} characters.", count=max_length))
    if any(ord(c) < 32 and c not in "\n\t" for c in text):
        raise ValidationError(
            _l("This field contains invisible characters that cannot be used. Please retype it.")
        )
    return text


def clean_choice(value: str, choices: dict[str, Msg] | tuple[str, ...]) -> str:
    if value not in choices:
        raise ValidationError(_l("Choose one of the options."))
    return value
