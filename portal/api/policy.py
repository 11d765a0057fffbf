"""Who may manage the firm API's tokens and the firm's one-click mediation link: the firm's
own representatives, each token only within its firm. (The API itself acts as the token's
representative, under the cases' and agreements' own rules.)"""

from __future__ import annotations

from portal.api.models import ApiToken, WebhookEndpoint
from portal.policy import ACL, ALLOW, AclFunction, Collection, Role, firm, role

INTEGRATION = Collection("firm_integration")


def integration_acl(_: Collection) -> ACL:
    return [(ALLOW, role(Role.FIRM_REP), ("view", "create_token", "make_link", "add_webhook"))]


def token_acl(token: ApiToken) -> ACL:
    return [(ALLOW, firm(token.firm_id, Role.FIRM_REP), ("view", "revoke"))]


def webhook_acl(endpoint: WebhookEndpoint) -> ACL:
    return [(ALLOW, firm(endpoint.firm_id, Role.FIRM_REP), ("view", "disable", "resend"))]


RULES: dict[type | Collection, AclFunction] = {
    INTEGRATION: integration_acl,
    ApiToken: token_acl,
    WebhookEndpoint: webhook_acl,
}
