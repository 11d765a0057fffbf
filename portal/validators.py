"""Field validators shared by forms. Each returns the cleaned value or raises ValidationError."""

from __future__ import annotations

import gzip
import re
from datetime import date
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


_ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_ID_CHECK = "10X98765432"


def resident_id_check_character(first17: str) -> str:
    """ISO 7064 MOD 11-2 check character of a resident identity card number (GB 11643)."""
    return _ID_CHECK[sum(int(c) * w for c, w in zip(first17, _ID_WEIGHTS, strict=True)) % 11]


def clean_resident_id(value: str, today: date | None = None) -> str:
    """居民身份证号码: 18 characters, a real birth date not in the future, a valid check."""
    number = re.sub(r"\s", "", value or "").upper()
    if not re.fullmatch(r"\d{17}[\dX]", number):
        raise ValidationError(
            _l("A resident ID number has 18 characters: 17 digits, then a digit or X.")
        )
    try:
        born = date(int(number[6:10]), int(number[10:12]), int(number[12:14]))
    except ValueError:
        raise ValidationError(_l("This ID number does not contain a real date of birth.")) from None
    today = today or date.today()
    if born > today or born.year < 1900:
        raise ValidationError(_l("This ID number does not contain a real date of birth."))
    if resident_id_check_character(number[:17]) != number[17]:
        raise ValidationError(
            _l("This ID number is not valid: its last character does not match. Check each digit.")
        )
    return number


def mask_resident_id(number: str) -> str:
    """3101**********1234: the region's first four and the last four characters."""
    return number[:4] + "*" * (len(number) - 8) + number[-4:]


def clean_amount_fen(value: str, *, maximum_fen: int = 10_000_000_000 * 100) -> int:
    """An amount in yuan as typed (1,234.5 or ¥1234.50) -> integer fen, > 0 and <= the maximum."""
    text = re.sub(r"[\s,¥￥元]", "", value or "")
    if not re.fullmatch(r"\d{1,14}(\.\d{1,2})?", text):
        raise ValidationError(_l("Enter an amount in yuan, such as 1234.50."))
    yuan, _, cents = text.partition(".")
    fen = int(yuan) * 100 + int((cents + "00")[:2])
    if fen <= 0:
        raise ValidationError(_l("The amount must be more than zero."))
    if fen > maximum_fen:
        raise ValidationError(_l("The amount cannot be more than ¥10,000,000,000."))
    return fen


def clean_past_date(value: str, today: date | None = None) -> date:
    try:
        day = date.fromisoformat((value or "").strip())
    except ValueError:
        raise ValidationError(_l("Enter a date like 2026-03-15.")) from None
    if day > (today or date.today()):
        raise ValidationError(_l("This date is in the future."))
    if day.year < 1990:
        raise ValidationError(_l("Enter a date from 1990 onwards."))
    return day
