"""The terms of a settlement agreement as data, and the text made from them.

Terms are what the system understands: money owed (a lump sum or instalments with due dates),
waived fees or interest, an apology, other obligations in words, and the claimant's withdrawal
of related complaints. :func:`check_terms` turns a form's fields into :class:`Terms` or refuses
them field by field; :func:`clauses` writes the clauses in Chinese (the legal text, per the
case's category template) and in English (a reading copy with no legal force).

Amounts are whole fen (分) throughout: no floats touch money.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import date
from typing import Any

from portal.agreements.pdf import chinese_numeral
from portal.errors import DomainError
from portal.i18n import _l

MAX_FEN = 10_000_000_000_00  # ten billion yuan: past any consumer dispute
MAX_INSTALMENTS = 36
MAX_OTHER = 10
MAX_CLAUSE = 1000
_AMOUNT = re.compile(r"\d{1,12}(\.\d{1,2})?")


@dataclass(frozen=True)
class Payment:
    amount_fen: int
    due: date


@dataclass(frozen=True)
class Terms:
    """What the firm and the claimant agree to. ``payments`` is the schedule of everything
    the firm pays (refund and compensation together): one row for a lump sum."""

    refund_fen: int = 0
    compensation_fen: int = 0
    payments: tuple[Payment, ...] = ()
    fee_waiver_fen: int = 0
    interest_waiver_fen: int = 0
    apology: bool = False
    other: tuple[str, ...] = ()
    withdraw_complaints: bool = False

    @property
    def total_fen(self) -> int:
        return self.refund_fen + self.compensation_fen

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["payments"] = [
            {"amount_fen": p.amount_fen, "due": p.due.isoformat()} for p in self.payments
        ]
        data["other"] = list(self.other)
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Terms:
        return cls(
            refund_fen=int(data.get("refund_fen", 0)),
            compensation_fen=int(data.get("compensation_fen", 0)),
            payments=tuple(
                Payment(int(p["amount_fen"]), date.fromisoformat(p["due"]))
                for p in data.get("payments", ())
            ),
            fee_waiver_fen=int(data.get("fee_waiver_fen", 0)),
            interest_waiver_fen=int(data.get("interest_waiver_fen", 0)),
            apology=bool(data.get("apology", False)),
            other=tuple(data.get("other", ())),
            withdraw_complaints=bool(data.get("withdraw_complaints", False)),
        )


def parse_fen(text: str, name: str) -> int:
    """'1,234.5' yuan → 123450 fen; empty → 0; anything else refused on field ``name``."""
    text = text.strip().replace(",", "").replace("，", "")
    if not text:
        return 0
    if not _AMOUNT.fullmatch(text):
        raise DomainError(_l("Enter an amount in yuan, such as 1200 or 1200.50."), field=name)
    whole, _, cents = text.partition(".")
    fen = int(whole) * 100 + int((cents + "00")[:2])
    if fen > MAX_FEN:
        raise DomainError(_l("The amount is too large."), field=name)
    return fen


def yuan(fen: int) -> str:
    """123450 → '1,234.50'."""
    return f"{fen // 100:,}.{fen % 100:02d}"


def _date(text: str, name: str) -> date:
    try:
        return date.fromisoformat(text.strip())
    except ValueError:
        raise DomainError(_l("Enter a date as YYYY-MM-DD."), field=name) from None


def check_terms(form: Mapping[str, str], payments: Sequence[tuple[str, str]], today: date) -> Terms:
    """Terms from a form: ``refund``, ``compensation``, ``fee_waiver``, ``interest_waiver``
    (yuan), ``apology`` and ``withdraw_complaints`` (checkboxes), ``other`` (one obligation
    per line), and ``payments``: (amount in yuan, due date) rows, which must add up to the
    refund and compensation together. Raises DomainError naming the field at fault."""
    refund = parse_fen(form.get("refund", ""), "refund")
    compensation = parse_fen(form.get("compensation", ""), "compensation")
    schedule: list[Payment] = []
    for n, (amount_text, due_text) in enumerate(payments, start=1):
        if not amount_text.strip() and not due_text.strip():
            continue
        amount = parse_fen(amount_text, f"payment_amount_{n}")
        if amount <= 0:
            raise DomainError(_l("Enter an amount above zero."), field=f"payment_amount_{n}")
        due = _date(due_text, f"payment_due_{n}")
        if due < today:
            raise DomainError(_l("The date has already passed."), field=f"payment_due_{n}")
        if schedule and due <= schedule[-1].due:
            raise DomainError(
                _l("Each payment must fall due after the one before it."),
                field=f"payment_due_{n}",
            )
        schedule.append(Payment(amount, due))
    if len(schedule) > MAX_INSTALMENTS:
        raise DomainError(_l("At most {count} payments.", count=MAX_INSTALMENTS), field="payments")
    total = refund + compensation
    if total and not schedule:
        raise DomainError(_l("Say when the money is to be paid."), field="payments")
    if sum(p.amount_fen for p in schedule) != total:
        raise DomainError(
            _l(
                "The payments add up to {paid} yuan, but the refund and compensation "
                "come to {total} yuan.",
                paid=yuan(sum(p.amount_fen for p in schedule)),
                total=yuan(total),
            ),
            field="payments",
        )
    other = tuple(line.strip() for line in form.get("other", "").splitlines() if line.strip())
    if len(other) > MAX_OTHER or any(len(line) > MAX_CLAUSE for line in other):
        raise DomainError(
            _l(
                "At most {count} other obligations, each one line of at most {size} characters.",
                count=MAX_OTHER,
                size=MAX_CLAUSE,
            ),
            field="other",
        )
    terms = Terms(
        refund_fen=refund,
        compensation_fen=compensation,
        payments=tuple(schedule),
        fee_waiver_fen=parse_fen(form.get("fee_waiver", ""), "fee_waiver"),
        interest_waiver_fen=parse_fen(form.get("interest_waiver", ""), "interest_waiver"),
        apology=form.get("apology") in ("1", "on", "yes"),
        other=other,
        withdraw_complaints=form.get("withdraw_complaints") in ("1", "on", "yes"),
    )
    if not any(
        (terms.total_fen, terms.fee_waiver_fen, terms.interest_waiver_fen, terms.apology, other)
    ):
        raise DomainError(_l("An agreement needs at least one term."), field="refund")
    return terms


# -- the text -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Template:
    """A category's agreement: what the dispute is called, in both languages."""

    dispute_zh: str
    dispute_en: str
    basis_zh: str = "《中华人民共和国人民调解法》"
    basis_en: str = "the People's Mediation Law of the People's Republic of China"
    extra_zh: tuple[str, ...] = field(default=())
    extra_en: tuple[str, ...] = field(default=())


_FINANCIAL_BASIS_ZH = "《中华人民共和国人民调解法》及金融消费者权益保护的有关规定"
_FINANCIAL_BASIS_EN = (
    "the People's Mediation Law of the People's Republic of China and the rules protecting "
    "financial consumers"
)

TEMPLATES: dict[str, Template] = {
    "securities_advisory": Template(
        "证券投资咨询服务合同纠纷",
        "a dispute over a securities investment advisory contract",
        _FINANCIAL_BASIS_ZH,
        _FINANCIAL_BASIS_EN,
        ("被申请人承诺今后向申请人提供服务时，依法履行适当性管理义务。",),
        ("The respondent undertakes to meet its suitability duties in serving the claimant.",),
    ),
    "credit_card": Template(
        "信用卡纠纷",
        "a credit card dispute",
        _FINANCIAL_BASIS_ZH,
        _FINANCIAL_BASIS_EN,
        ("被申请人在本协议履行完毕后，按实际还款情况向征信机构报送申请人的信用信息。",),
        (
            "Once this agreement is carried out, the respondent reports the claimant's credit "
            "information to the credit bureau as the repayments actually stand.",
        ),
    ),
    "small_loan": Template(
        "小额贷款合同纠纷", "a small loan dispute", _FINANCIAL_BASIS_ZH, _FINANCIAL_BASIS_EN
    ),
    "small_business_loan": Template(
        "小微企业贷款纠纷",
        "a small-business loan dispute",
        _FINANCIAL_BASIS_ZH,
        _FINANCIAL_BASIS_EN,
    ),
    "personal_business_loan": Template(
        "个人经营贷款纠纷",
        "a personal business loan dispute",
        _FINANCIAL_BASIS_ZH,
        _FINANCIAL_BASIS_EN,
    ),
    "insurance": Template(
        "保险合同纠纷", "an insurance contract dispute", _FINANCIAL_BASIS_ZH, _FINANCIAL_BASIS_EN
    ),
    "bank_wealth": Template(
        "银行理财产品纠纷",
        "a bank wealth-management product dispute",
        _FINANCIAL_BASIS_ZH,
        _FINANCIAL_BASIS_EN,
    ),
    "consumer": Template(
        "消费者权益纠纷",
        "a consumer dispute",
        "《中华人民共和国人民调解法》《中华人民共和国消费者权益保护法》",
        "the People's Mediation Law and the Consumer Rights Protection Law of the People's "
        "Republic of China",
    ),
    "other": Template("纠纷", "a dispute"),
}


def template_for(category: str) -> Template:
    return TEMPLATES.get(category, TEMPLATES["other"])


def _zh_date(day: date) -> str:
    return f"{day.year}年{day.month}月{day.day}日"


def _en_date(day: date) -> str:
    return f"{day.day} {day.strftime('%B')} {day.year}"


def preamble(category: str) -> tuple[str, str]:
    t = template_for(category)
    return (
        f"申请人与被申请人之间的{t.dispute_zh}，经本调解组织依据{t.basis_zh}主持调解，"
        "双方在自愿、平等的基础上达成如下协议：",
        f"In {t.dispute_en} between the claimant and the respondent, mediated by this "
        f"mediation organisation under {t.basis_en}, the parties have freely and as equals "
        "agreed as follows:",
    )


CLOSING_ZH = (
    "本协议以电子方式签署，经双方当事人全部签署后生效，具有法律约束力，当事人应当按照约定"
    "履行。双方可以自本协议生效之日起三十日内共同向有管辖权的人民法院申请司法确认。"
)
CLOSING_EN = (
    "This agreement is signed electronically and takes effect, binding in law, once every "
    "party has signed it; the parties shall perform it as agreed. Within thirty days of its "
    "taking effect the parties may jointly apply to a competent people's court for judicial "
    "confirmation."
)


def clauses(terms: Terms, category: str) -> tuple[list[str], list[str]]:
    """The clauses in Chinese (the legal text) and in English (a reading copy), unnumbered."""
    zh: list[str] = []
    en: list[str] = []
    money = []
    if terms.refund_fen:
        money.append(
            (
                f"退还款项人民币{yuan(terms.refund_fen)}元",
                f"a refund of CNY {yuan(terms.refund_fen)}",
            )
        )
    if terms.compensation_fen:
        money.append(
            (
                f"补偿款人民币{yuan(terms.compensation_fen)}元",
                f"compensation of CNY {yuan(terms.compensation_fen)}",
            )
        )
    if money:
        what_zh = "及".join(m[0] for m in money)
        what_en = " and ".join(m[1] for m in money)
        total = yuan(terms.total_fen)
        if len(terms.payments) == 1:
            due = terms.payments[0].due
            zh.append(
                f"被申请人同意向申请人支付{what_zh}，共计人民币{total}元，"
                f"于{_zh_date(due)}前一次性支付至申请人指定账户。"
            )
            en.append(
                f"The respondent agrees to pay the claimant {what_en}, CNY {total} in all, in "
                f"one payment into the account the claimant names, by {_en_date(due)}."
            )
        else:
            parts_zh = "；".join(
                f"第{chinese_numeral(i)}期于{_zh_date(p.due)}前支付人民币{yuan(p.amount_fen)}元"
                for i, p in enumerate(terms.payments, start=1)
            )
            parts_en = "; ".join(
                f"instalment {i}, CNY {yuan(p.amount_fen)}, by {_en_date(p.due)}"
                for i, p in enumerate(terms.payments, start=1)
            )
            zh.append(
                f"被申请人同意向申请人支付{what_zh}，共计人民币{total}元，"
                f"分{chinese_numeral(len(terms.payments))}期支付至申请人指定账户：{parts_zh}。"
            )
            en.append(
                f"The respondent agrees to pay the claimant {what_en}, CNY {total} in all, in "
                f"{len(terms.payments)} instalments into the account the claimant names: "
                f"{parts_en}."
            )
        zh.append("被申请人逾期未支付任何一期款项的，申请人可以就未付款项一并主张权利。")
        en.append(
            "Should the respondent miss any payment, the claimant may claim everything unpaid "
            "at once."
        )
    if terms.fee_waiver_fen:
        zh.append(f"被申请人同意减免申请人应付的手续费人民币{yuan(terms.fee_waiver_fen)}元。")
        en.append(
            f"The respondent waives fees of CNY {yuan(terms.fee_waiver_fen)} owed by the claimant."
        )
    if terms.interest_waiver_fen:
        zh.append(
            f"被申请人同意减免申请人应付的利息、罚息人民币{yuan(terms.interest_waiver_fen)}元。"
        )
        en.append(
            "The respondent waives interest and penalty interest of "
            f"CNY {yuan(terms.interest_waiver_fen)} owed by the claimant."
        )
    if terms.apology:
        zh.append("被申请人就本纠纷向申请人书面赔礼道歉。")
        en.append("The respondent apologises to the claimant in writing for this dispute.")
    for line in terms.other:
        zh.append(line)
        en.append(f"(Other obligation, as written in Chinese:) {line}")
    template = template_for(category)
    zh.extend(template.extra_zh)
    en.extend(template.extra_en)
    if terms.withdraw_complaints:
        zh.append(
            "申请人在被申请人履行完毕本协议约定的义务后，撤回就本纠纷向有关部门提出的投诉，"
            "并不再就同一事项向被申请人主张其他权利。"
        )
        en.append(
            "Once the respondent has performed its obligations under this agreement, the "
            "claimant withdraws the complaints about this dispute made to any authority and "
            "makes no further claim against the respondent on the same matter."
        )
    return zh, en
