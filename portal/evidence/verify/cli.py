"""``jiefen-verify``: check an evidence receipt (存证凭证) offline.

Usage::

    jiefen-verify RECEIPT [FILE] [--key VKEY_OR_FILE ...] [--tsa-ca PEM ...] [--json]
                  [--lang zh|en]

    python -m portal.evidence.verify.cli RECEIPT [FILE] ...

``RECEIPT`` is the receipt's JSON file (``-`` reads standard input); ``FILE`` the evidence file
it is for. ``--key`` gives the log key the mediation committee publishes, as a verifier key
(``name+keyid+base64``) or a file with one per line; without it the receipt's own key is used
and its fingerprint printed, to be compared by hand. ``--tsa-ca`` gives root certificates (PEM)
of the time-stamping authority. Each check prints as ✓ (holds), ✗ (fails) or – (not checked),
then a one-line verdict.

Exit status: 0 when nothing that was checked failed, 1 when something failed (including a
malformed receipt), 2 for usage errors (missing files, malformed keys).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from portal.evidence.verify.note import NoteError, Verifier, parse_vkey
from portal.evidence.verify.receipt import Report, verify_receipt

__all__ = ["main"]

MARKS = {True: "✓", False: "✗", None: "–"}


class _UsageError(Exception):
    pass


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="jiefen-verify",
        description="Check a Jiefen evidence receipt offline. / 离线验证解纷存证凭证。",
    )
    parser.add_argument("receipt", metavar="RECEIPT", help="the receipt (JSON); - for stdin")
    parser.add_argument("file", metavar="FILE", nargs="?", help="the evidence file to check")
    parser.add_argument(
        "--key",
        metavar="VKEY_OR_FILE",
        action="append",
        default=[],
        help="the log key the committee publishes (verifier key, or a file of them)",
    )
    parser.add_argument(
        "--tsa-ca",
        metavar="PEM",
        action="append",
        default=[],
        help="root certificate(s) of the time-stamping authority, PEM",
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--lang", choices=["zh", "en"], default="zh", help="language (zh)")
    return parser


def _read(path: str, what: str) -> bytes:
    try:
        if path == "-":
            return sys.stdin.buffer.read()
        return Path(path).read_bytes()
    except OSError as exc:
        raise _UsageError(f"cannot read {what} {path}: {exc.strerror or exc}") from None


def _keys(values: Sequence[str]) -> list[Verifier] | None:
    if not values:
        return None
    keys: list[Verifier] = []
    for value in values:
        candidates = [value]
        if Path(value).is_file():
            text = _read(value, "key file").decode("utf-8", "replace")
            candidates = [
                line.strip()
                for line in text.splitlines()
                if line.strip() and not line.lstrip().startswith("#")
            ]
            if not candidates:
                raise _UsageError(f"no key in {value}")
        for candidate in candidates:
            try:
                keys.append(parse_vkey(candidate))
            except NoteError as exc:
                raise _UsageError(f"invalid key {candidate!r}: {exc}") from None
    return keys


def _print_report(report: Report, lang: str) -> None:
    colon = "：" if lang == "zh" else ": "
    for check in report.checks:
        print(f"{MARKS[check.ok]} {check.label(lang)}{colon}{check.message(lang)}")
    print()
    print(report.verdict(lang))


def main(argv: Sequence[str] | None = None) -> int:
    """Run the verifier; returns the exit status."""
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exc:  # usage errors (2) and --help (0)
        return exc.code if isinstance(exc.code, int) else 2
    reconfigure = getattr(sys.stdout, "reconfigure", None)
    if reconfigure is not None:
        reconfigure(errors="backslashreplace")
    try:
        receipt = _read(args.receipt, "receipt")
        if args.file is not None and not Path(args.file).is_file():
            raise _UsageError(f"cannot read file {args.file}: no such file")
        keys = _keys(args.key)
        roots = [_read(path, "certificate") for path in args.tsa_ca] or None
    except _UsageError as exc:
        print(f"jiefen-verify: {exc}", file=sys.stderr)
        return 2
    report = verify_receipt(receipt, args.file, keys, tsa_roots_pem=roots)
    if args.json:
        print(json.dumps(report.to_dict(), ensure_ascii=False, indent=2))
    else:
        _print_report(report, args.lang)
    return 0 if report.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
