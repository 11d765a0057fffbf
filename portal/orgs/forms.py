"""Forms for committees, firms, mediator profiles and declared ties."""

from __future__ import annotations

from portal.i18n import _l
from portal.orgs.categories import CATEGORIES, GRADES, INDUSTRIES, TIE_KINDS
from portal.validators import clean_choice, clean_credit_code, clean_text
from portal.web import Form


class CommitteeForm(Form):
    def validate(self) -> bool:
        self.clean("name", clean_text, max_length=120)
        self.clean("name_en", clean_text, max_length=160, required=False)
        self.clean("region", clean_text, max_length=120)
        prefix = self.value("case_prefix").strip().upper()
        if not (2 <= len(prefix) <= 6 and prefix.isascii() and prefix.isalpha()):
            self.add_error(
                "case_prefix", _l("The case-number prefix is 2 to 6 capital letters, such as PT.")
            )
        self.cleaned["case_prefix"] = prefix
        categories = self.values("categories")
        if not categories or any(c not in CATEGORIES for c in categories):
            self.add_error("categories", _l("Choose at least one dispute category."))
        self.cleaned["categories"] = [c for c in CATEGORIES if c in categories]
        return self.valid


class FirmForm(Form):
    def validate(self) -> bool:
        self.clean("name", clean_text, max_length=120)
        self.clean("name_en", clean_text, max_length=160, required=False)
        self.clean("credit_code", clean_credit_code)
        self.clean("industry", clean_choice, INDUSTRIES)
        return self.valid


class MediatorForm(Form):
    def validate(self) -> bool:
        specialties = self.values("specialties")
        if any(s not in CATEGORIES for s in specialties):
            self.add_error("specialties", _l("Choose one of the options."))
        self.cleaned["specialties"] = [c for c in CATEGORIES if c in specialties]
        self.clean("grade", clean_choice, GRADES)
        return self.valid


class TieForm(Form):
    def validate(self) -> bool:
        if not self.value("firm_id").isdigit():
            self.add_error("firm_id", _l("Choose one of the options."))
        self.clean("kind", clean_choice, TIE_KINDS)
        self.clean("note", clean_text, max_length=500, required=False)
        return self.valid
