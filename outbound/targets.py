"""Where a customer is reached: the one place that turns a contact into a channel and an
address on it.

A notification to a customer is addressed to the contact. It goes out on the channel the
ticket came from (or the one staff chose, `helpgate reply --via`); when the contact has no
address there, the channels of `notifications.fallback_order` are tried in order. The
choice is made when the notification is queued, and made again when it is sent should
its channel have no transport then (outbound/outbox.py), so a customer is never left
unanswered because one channel is missing. Copies (a contact's duplicate address, the
company's, the global one) are plain email addresses. A contact's phone is their address
for SMS.

An employee is reached on each channel of `notifications.employee_channels` where the
directory has an address of theirs: their email, their phone (SMS), their own chat with
the bot (an identity of kind employee), on the channels helpgate is set up to send on.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy.orm import Session

from helpgate.config.schema import Config
from helpgate.outbound.sms_text import e164
from helpgate.ticketstore.recipients import contact_reach, staff_reach


@dataclass(frozen=True, slots=True)
class Target:
    channel: str
    recipient: str
    # The contact it reaches, when it is the contact (not a copy): chosen again at send
    # time if `channel` cannot be used then.
    contact_id: int | None = None


def addresses(session: Session, contact_id: int) -> dict[str, str]:
    """The contact's address on each channel: their email, their messenger ids, and
    their phone for SMS when it is a number an SMS can reach (normalised to E.164 with
    `[sms] default_country_code` when sent, outbound/sms.py). Identities a channel
    refused to deliver to are passed over (ticketstore.recipients.mark_unreachable)."""
    ids, row = contact_reach(session, contact_id)
    found = {channel: external_id for channel, external_id in ids}
    if row is not None and row.email:
        found["email"] = row.email
    if row is not None and row.phone and e164(row.phone) is not None:
        found.setdefault("sms", row.phone.strip())
    return found


# What each channel needs set up before helpgate sends on it (the transport factories of
# outbound/<name>.py return None without it): an employee is told only where it can be.
_SET_UP = {"email": lambda config: True,
           "sms": lambda config: bool(config.sms.provider),
           "telegram": lambda config: bool(config.telegram.token),
           "vk": lambda config: bool(config.vk.token)}


def employee_channels(config: Config) -> list[str]:
    """`notifications.employee_channels` that helpgate can send on."""
    return [channel for channel in config.notifications.employee_channels
            if _SET_UP.get(channel, lambda config: False)(config)]


def staff_addresses(session: Session) -> dict[int, dict[str, str]]:
    """Each employee's address per channel: email, their phone for SMS (when an SMS can
    reach it), their messenger ids. Read once per transaction (a batch shares it)."""
    known = session.info.get("staff_addresses")
    if known is not None:
        return known
    employees, identities = staff_reach(session)
    known = {}
    for row in employees:
        found = known.setdefault(row.id, {})
        if row.email:
            found["email"] = row.email.lower()
        if row.phone and e164(row.phone) is not None:
            found["sms"] = row.phone.strip()
    for employee_id, channel, external_id in identities:
        known.get(employee_id, {}).setdefault(channel, external_id)
    session.info["staff_addresses"] = known
    return known


def reach(known: dict[str, str], first: str | None, order: list[str],
          usable: Callable[[str], bool] = lambda channel: True) -> tuple[str, str] | None:
    """(channel, address): `first`, then `order`, the first channel the contact has an
    address on and that is `usable`; None when there is none."""
    for channel in dict.fromkeys(c for c in (first, *order) if c):
        if known.get(channel) and usable(channel):
            return channel, known[channel]
    return None

