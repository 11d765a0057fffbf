"""Forms for registration, login, password change and invitations."""

from __future__ import annotations

from portal.i18n import _l
from portal.policy import Role
from portal.validators import clean_email, clean_new_password, clean_phone, clean_text
from portal.web import Form

INVITABLE_ROLES = {
    Role.FIRM_REP.value: _l("Firm representative"),
    Role.MEDIATOR.value: _l("Mediator"),
    Role.COMMITTEE_ADMIN.value: _l("Committee administrator"),
    Role.PLATFORM_ADMIN.value: _l("Platform administrator"),
}

ROLE_NAMES = {
    Role.CONSUMER.value: _l("Consumer"),
    **INVITABLE_ROLES,
}


class NewAccountForm(Form):
    """Name, a phone number and/or an email address, and a password."""

    def validate(self) -> bool:
        self.clean("display_name", clean_text, max_length=60)
        phone = self.value("phone").strip()
        email = self.value("email").strip()
        if not phone and not email:
            self.add_error("phone", _l("Give a mobile number or an email address to log in with."))
        if phone:
            self.clean("phone", clean_phone)
        if email:
            self.clean("email", clean_email)
        self.clean("password", clean_new_password)
        return self.valid


class LoginForm(Form):
    def validate(self) -> bool:
        if not self.value("login").strip():
            self.add_error("login", _l("Enter your mobile number or email address."))
        if not self.value("password"):
            self.add_error("password", _l("Enter your password."))
        return self.valid

    @property
    def login(self) -> str:
        raw = self.value("login").strip()
        if "@" in raw:
            return raw.lower()
        try:
            return clean_phone(raw)
        except ValueError:
            return raw


class PasswordForm(Form):
    def validate(self) -> bool:
        if not self.value("current"):
            self.add_error("current", _l("Enter your current password."))
        self.clean("new", clean_new_password)
        return self.valid


class ExportForm(Form):
    """Downloading one's data asks for the password again: a session left open is not enough."""

    def validate(self) -> bool:
        if not self.value("current"):
            self.add_error("current", _l("Enter your current password."))
        return self.valid


class InvitationForm(Form):
    def validate(self) -> bool:
        self.clean("invitee_name", clean_text, max_length=60)
        if self.value("role") not in INVITABLE_ROLES:
            self.add_error("role", _l("Choose one of the options."))
        for name in ("firm_id", "committee_id"):
            raw = self.value(name)
            if raw and not raw.isdigit():
                self.add_error(name, _l("Choose one of the options."))
        return self.valid

    def int_or_none(self, name: str) -> int | None:
        raw = self.value(name)
        return int(raw) if raw.isdigit() else None
