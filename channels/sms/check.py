"""`helpgate sms check`: does the configured gateway take our credentials, and how much
money is left — before a customer's answer waits in the outbox for a wrong password.

One call that proves the credentials and reads the balance (SMSAero: its `auth` call
first); nothing is sent. Each finding is one line in plain words with what to do.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

from helpgate.channels.base import Finding
from helpgate.channels.sms.api import (
    Refused,
    SmsError,
    SmsSetupError,
    gateway,
)
from helpgate.config.schema import Config

NOT_CONFIGURED = Finding(
    "config", False, "sms is not configured: set [sms] provider",
    'set [sms] provider = "smsc", "smsru" or "smsaero" with its credentials in '
    "helpgate.toml (README: SMS)")


async def check(config: Config) -> list[Finding]:
    settings = config.sms
    if not settings.provider:
        return [NOT_CONFIGURED]
    try:
        provider = gateway(settings)
    except SmsSetupError as exc:
        return [Finding("config", False, str(exc),
                        "set the keys named in [sms] (README: SMS)")]
    where = f"{provider.title} at {provider.base_url}"
    try:
        balance = await provider.balance()
    except Refused as exc:
        if exc.what == "money":
            return [Finding("api", True, f"{where} answers"),
                    Finding("balance", False, exc.message,
                            "top the account up on the provider's site")]
        return [Finding("api", True, f"{where} answers"),
                Finding("credentials", False, exc.message,
                        "set sms.login, sms.password or sms.api_key as the provider's "
                        "account page shows them (README: SMS)")]
    except SmsError as exc:
        return [Finding("api", False, f"cannot use {where}: {exc.message}",
                        "check [sms] base_url (empty: the provider's own) and that this "
                        "machine reaches it (network, firewall, proxy, DNS)")]
    finally:
        await provider.close()
    findings = [Finding("api", True, f"{where} answers"),
                Finding("credentials", True, f"{provider.title} accepts the credentials")]
    empty = _amount(balance.amount) is not None and _amount(balance.amount) <= 0
    findings.append(Finding(
        "balance", True, f"balance: {balance}",
        "top the account up: every SMS will be refused while it has no money"
        if empty else None))
    if not settings.sender:
        findings.append(Finding("sender", True, "no sms.sender: messages go with the "
                                "account's default sender name"))
    return findings


def _amount(value: str) -> Decimal | None:
    try:
        return Decimal(value)
    except (InvalidOperation, ValueError):
        return None
