"""What to send, to whom, looking how: notifications planned as outbox drafts.

Called inside the transaction that stores the event, so a notification exists exactly when
its event does (R-OUT-6). Every email carries the ticket marker in its subject, our
separator line above the quoted history, threading headers and Auto-Submitted, and a
Message-ID of ours that maps back to the ticket (R-TH-1, R-TH-2, R-OUT-2, PROTOCOLS.md).
Recipients follow R-OUT-3; internal ticket types and private comments never reach the
customer (R-OUT-5, R-GW-2).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from helpgate.config.schema import Config
from helpgate.outbound.headers import clean, message_ids
from helpgate.threading.markers import format_marker, make_message_id
from helpgate.ticketstore.models import Comment, Company, Contact, Ticket

QUOTE_PREFIX = "> "


@dataclass(slots=True)
class Draft:
    kind: str
    channel: str
    recipient: str
    subject: str
    text: str
    dedupe_key: str
    ticket_id: int
    comment_id: int | None = None
    message_id: str | None = None
    headers: dict[str, str] = field(default_factory=dict)


class Composer:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.texts = config.text()

    def marker(self, ticket: Ticket) -> str:
        return format_marker(self.config.threading.marker, ticket.number)

    def subject(self, template: str, ticket: Ticket) -> str:
        return template.format(marker=self.marker(ticket), subject=ticket.subject,
                               number=ticket.number).strip()

    def email(self, *, kind: str, ticket: Ticket, recipient: str, subject: str, content: str,
              event_key: str, comment: Comment | None = None, quoted: str | None = None,
              reply_to_ids: list[str] | None = None, auto: str = "auto-generated") -> Draft:
        """One email notification: separator, content, quoted history, threading headers."""
        mail = self.config.mail
        body = [self.texts.separator, "", content.strip()]
        if quoted and quoted.strip():
            body += ["", *(QUOTE_PREFIX + line for line in quoted.strip().splitlines())]
        headers = {"Auto-Submitted": auto, "X-Helpgate-Ticket": str(ticket.number),
                   "From": _address(mail.display_name, mail.address)}
        if mail.reply_to:
            headers["Reply-To"] = mail.reply_to
        reply_to_ids = message_ids(reply_to_ids or [])
        if reply_to_ids:
            headers["In-Reply-To"] = reply_to_ids[-1]
            headers["References"] = " ".join(reply_to_ids)
        return Draft(kind=kind, channel="email", recipient=recipient, subject=clean(subject),
                     text="\n".join(body) + "\n",
                     dedupe_key=f"{kind}:{event_key}:{recipient}", ticket_id=ticket.id,
                     comment_id=comment.id if comment else None,
                     message_id=make_message_id(ticket.number, mail.message_id_domain),
                     headers=headers)

    def customer_targets(self, ticket: Ticket, contact: Contact | None,
                         company: Company | None) -> list[str]:
        """R-OUT-3: the contact's email, else the company's; then the chosen duplicates."""
        if ticket.type in self.config.tickets.internal_types:
            return []
        rules = self.config.notifications
        targets: list[str] = []
        if contact is not None and contact.email:
            targets.append(contact.email)
        elif contact is not None and company is not None and company.email:
            targets.append(company.email)
        if contact is not None and rules.contact_duplicate and contact.duplicate_email:
            targets.append(contact.duplicate_email)
        if company is not None and company.email:
            wanted = {"always": True,
                      "no_contact_email": contact is not None and not contact.email,
                      "no_contact": contact is None}.get(rules.company_duplicate, False)
            if wanted:
                targets.append(company.email)
        if rules.global_duplicate and targets:
            targets.append(rules.global_duplicate)
        return _unique(targets)

    def staff_targets(self, employees: list, author_email: str | None) -> list[str]:
        """Employees (anything with an `email`) to tell, without the event's author."""
        wanted = self.config.notifications.employees
        if wanted == "none":
            return []
        chosen = [e.email for e in employees if e.email]
        if wanted != "all":
            listed = {a.lower() for a in wanted}
            chosen = [a for a in chosen if a in listed]
        return _unique([a for a in chosen if a != author_email])


def _address(name: str, address: str) -> str:
    from email.utils import formataddr
    return formataddr((name, address)) if name else address


def _unique(addresses: list[str]) -> list[str]:
    seen: dict[str, None] = {}
    for address in addresses:
        if address:
            seen.setdefault(address.lower(), None)
    return list(seen)
