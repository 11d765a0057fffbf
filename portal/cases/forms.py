"""Forms of the filing wizard and of the case page's actions."""

from __future__ import annotations

from portal.cases.service import ELIGIBILITY_QUESTIONS, OUTCOMES, REQUESTABLE_ITEMS, RESPONSES
from portal.i18n import _l
from portal.orgs.categories import CATEGORIES
from portal.validators import (
    clean_amount_fen,
    clean_choice,
    clean_credit_code,
    clean_past_date,
    clean_phone,
    clean_resident_id,
    clean_text,
)
from portal.web import Form

MAX_FACTS = 20_000


class StartForm(Form):
    """Step 1: category, region and respondent."""

    def validate(self) -> bool:
        self.clean("category", clean_choice, CATEGORIES)
        self.clean("region", clean_text, max_length=60, required=False)
        firm_id = self.value("firm_id")
        if firm_id and not firm_id.isdigit():
            self.add_error("firm_id", _l("Choose one of the options."))
        self.cleaned["firm_id"] = int(firm_id) if firm_id.isdigit() else None
        self.clean("respondent_name", clean_text, max_length=120, required=False)
        code = self.value("respondent_credit_code").strip()
        self.cleaned["respondent_credit_code"] = None
        if code:
            self.clean("respondent_credit_code", clean_credit_code)
        if not self.cleaned["firm_id"] and not self.cleaned.get("respondent_name"):
            self.add_error(
                "firm_id", _l("Choose the firm, or give the name of a firm that is not listed.")
            )
        if len(self.value("form_key")) < 16:
            self.add_error(None, _l("The form is incomplete. Reload the page and try again."))
        return self.valid


class ClaimantForm(Form):
    def validate(self) -> bool:
        filed_as = self.value("filed_as") or "self"
        if filed_as not in ("self", "agent"):
            self.add_error("filed_as", _l("Choose one of the options."))
        self.cleaned["filed_as"] = filed_as
        self.clean("name", clean_text, max_length=60)
        self.clean("id_number", clean_resident_id)
        if filed_as == "agent":
            self.clean("agent_name", clean_text, max_length=60)
            self.clean("agent_phone", clean_phone)
            self.clean("agent_org", clean_text, max_length=120, required=False)
            if self.value("claimant_phone").strip():
                self.clean("claimant_phone", clean_phone)
        return self.valid


class ClaimsForm(Form):
    def validate(self) -> bool:
        self.clean("amount", clean_amount_fen)
        outcomes = self.values("outcomes")
        if not outcomes or any(o not in OUTCOMES for o in outcomes):
            self.add_error("outcomes", _l("Choose at least one outcome you ask for."))
        self.cleaned["outcomes"] = [o for o in OUTCOMES if o in outcomes]
        self.clean("facts", clean_text, max_length=MAX_FACTS)
        self.cleaned["incident_date"] = None
        if self.value("incident_date").strip():
            self.clean("incident_date", clean_past_date)
        return self.valid


class EligibilityForm(Form):
    def validate(self) -> bool:
        answers = {}
        for key in ELIGIBILITY_QUESTIONS:
            value = self.value(key)
            if value not in ("yes", "no"):
                self.add_error(key, _l("Answer yes or no."))
            answers[key] = value == "yes"
        self.cleaned["answers"] = answers
        return self.valid


class RequestForm(Form):
    def validate(self) -> bool:
        items = self.values("items")
        if not items or any(i not in REQUESTABLE_ITEMS for i in items):
            self.add_error("items", _l("Choose what the claimant should provide."))
        self.cleaned["items"] = [i for i in REQUESTABLE_ITEMS if i in items]
        self.clean("reason", clean_text, max_length=2000, required=False)
        return self.valid


class ResponseForm(Form):
    def validate(self) -> bool:
        self.clean("kind", clean_choice, RESPONSES)
        self.cleaned["offer"] = None
        if self.value("offer").strip():
            self.clean("offer", clean_amount_fen)
        self.clean("terms", clean_text, max_length=5000, required=False)
        return self.valid
