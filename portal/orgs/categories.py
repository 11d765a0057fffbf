"""Dispute categories, firm industries and mediator grades: codes in data, labels translated."""

from __future__ import annotations

from portal.i18n import Msg, _l

CATEGORIES: dict[str, Msg] = {
    "securities_advisory": _l("Securities investment advisory"),
    "credit_card": _l("Credit card"),
    "small_loan": _l("Small loan"),
    "small_business_loan": _l("Small-business loan"),
    "personal_business_loan": _l("Personal business loan"),
    "insurance": _l("Insurance"),
    "bank_wealth": _l("Bank wealth product"),
    "consumer": _l("Consumer goods or services"),
    "other": _l("Other"),
}

INDUSTRIES: dict[str, Msg] = {
    "securities": _l("Securities and futures"),
    "banking": _l("Banking"),
    "insurance": _l("Insurance"),
    "lending": _l("Lending and consumer finance"),
    "payment": _l("Payment"),
    "consumer": _l("Consumer goods and services"),
    "other": _l("Other"),
}

GRADES: dict[str, Msg] = {
    "senior": _l("Senior mediator"),
    "intermediate": _l("Intermediate mediator"),
    "junior": _l("Junior mediator"),
}

TIE_KINDS: dict[str, Msg] = {
    "former_employee": _l("Former employee"),
    "shareholder": _l("Shareholder"),
    "relative": _l("Close relative works there"),
    "business": _l("Business relationship"),
    "other": _l("Other tie"),
}
