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
from functools import lru_cache

from helpgate.config.schema import Config, Texts, format_size
from helpgate.outbound.headers import clean, message_ids
from helpgate.outbound.targets import Target, reach
from helpgate.threading.markers import format_marker, make_message_id, thread_root
from helpgate.ticketstore.models import Comment, Company, Contact, Ticket

QUOTE_PREFIX = "> "


@dataclass(slots=True)
class Draft:
    kind: str
    channel: str
    recipient: str
    subject: str
    # As a mail: our separator, the words, the quoted history.
    text: str
    dedupe_key: str
    ticket_id: int
    comment_id: int | None = None
    message_id: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    # Ids of the stored attachments the message carries.
    attachments: list[int] = field(default_factory=list)
    # The words alone (what a messenger sends), and the contact it is addressed to.
    content: str = ""
    contact_id: int | None = None
    # Rows of [label, data] a messenger shows under the words (outbound/base.py).
    buttons: list[list[list[str]]] | None = None


class Composer:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.texts = config.text()
        self._texts: dict[str, Texts] = {}

    def texts_for(self, language: str) -> Texts:
        if language not in self._texts:
            self._texts[language] = self.config.text(language)
        return self._texts[language]

    def marker(self, ticket: Ticket) -> str:
        return format_marker(self.config.threading.marker, ticket.number)

    def thread_root(self, ticket: Ticket) -> str:
        """A Message-ID every notification of the ticket refers to, so that mail clients
        keep them in one conversation; like ours, it names the ticket."""
        return thread_root(ticket.number, self.config.mail.message_id_domain)

    def attachable(self, files: list) -> tuple[list, list]:
        """Stored files in order while they fit the size limit of one mail; the rest."""
        budget = self.config.mail.max_outgoing_attachments_size
        attached, left_out = [], []
        for item in files:
            if item.stored and item.size <= budget:
                attached.append(item)
                budget -= item.size
            elif item.stored:
                left_out.append(item)
        return attached, left_out

    def left_out_notes(self, files: list, texts: Texts) -> list[str]:
        limit = format_size(self.config.mail.max_outgoing_attachments_size)
        return [texts.attachment_not_attached.format(
            filename=clean(f.filename), size=format_size(f.size), limit=limit) for f in files]

    def file_list(self, files: list, attached: set[int], texts: Texts) -> str:
        """Every file of a message for staff: name, size, id, and why one is missing."""
        if not files:
            return ""
        limit = format_size(self.config.mail.max_outgoing_attachments_size)
        lines = [texts.staff_attachments]
        for item in files:
            line = f"- {clean(item.filename)} ({format_size(item.size)}, id {item.id})"
            if not item.stored:
                line += f": {texts.attachment_not_stored}"
            elif item.id not in attached:
                line += ": " + texts.attachment_left_out.format(limit=limit)
            lines.append(line)
        return "\n".join(lines)

    def subject(self, template: str, ticket: Ticket) -> str:
        return template.format(marker=self.marker(ticket), subject=ticket.subject,
                               number=ticket.number).strip()

    def draft(self, *, kind: str, ticket: Ticket, to: Target | str, subject: str,
              content: str, event_key: str, comment: Comment | None = None,
              quoted: str | None = None, reply_to_ids: list[str] | None = None,
              auto: str = "auto-generated", texts: Texts | None = None,
              attachments: list[int] | None = None,
              buttons: list[list[list[str]]] | None = None) -> Draft:
        """One notification to `to` (a Target, or an email address): the words, and the
        same as a mail (separator, content, quoted history, threading headers), so that
        it can go out on whichever channel reaches the person when it is sent."""
        to = to if isinstance(to, Target) else Target("email", to)
        mail = self.config.mail
        body = [(texts or self.texts).separator, "", content.strip()]
        if quoted and quoted.strip():
            body += ["", *(QUOTE_PREFIX + line for line in quoted.strip().splitlines())]
        headers = {"Auto-Submitted": auto, "X-Helpgate-Ticket": str(ticket.number),
                   "From": address_line(mail.display_name, mail.address)}
        if mail.reply_to:
            headers["Reply-To"] = mail.reply_to
        reply_to_ids = message_ids(reply_to_ids or [])
        if reply_to_ids:
            headers["In-Reply-To"] = reply_to_ids[-1]
            headers["References"] = " ".join(reply_to_ids)
        # Mail keeps the key it always had; another channel's address is named with it.
        where = to.recipient if to.channel == "email" else f"{to.channel}:{to.recipient}"
        return Draft(kind=kind, channel=to.channel, recipient=to.recipient,
                     subject=clean(subject), text="\n".join(body) + "\n",
                     dedupe_key=f"{kind}:{event_key}:{where}", ticket_id=ticket.id,
                     comment_id=comment.id if comment else None,
                     message_id=make_message_id(ticket.number, mail.message_id_domain),
                     headers=headers, attachments=list(attachments or []),
                     content=content.strip(), contact_id=to.contact_id,
                     buttons=buttons if to.channel != "email" else None)

    def customer_targets(self, ticket: Ticket, contact: Contact | None,
                         company: Company | None, known: dict[str, str] | None = None,
                         via: str | None = None) -> list[Target]:
        """R-OUT-3: the contact where they are reached (`known`: their address per
        channel; `via` or the ticket's channel first, then the fallback order), else the
        company's email; then the chosen duplicates, by email."""
        if ticket.type in self.config.tickets.internal_types:
            return []
        rules = self.config.notifications
        known = known if known is not None else (
            {"email": contact.email} if contact is not None and contact.email else {})
        found = reach(known, via or ticket.channel, rules.fallback_order) \
            if contact is not None else None
        targets: list[Target] = []
        chat = getattr(ticket, "chat", None)
        if found is not None and chat and found[0] == ticket.channel:
            # A ticket of a customer company's group chat is answered in the group.
            found = (ticket.channel, chat)
        if found is not None:
            targets.append(Target(*found, contact_id=contact.id))
        elif contact is not None and company is not None and company.email:
            targets.append(Target("email", company.email.lower()))
        copies: list[str] = []
        if contact is not None and rules.contact_duplicate and contact.duplicate_email:
            copies.append(contact.duplicate_email)
        if company is not None and company.email:
            wanted = {"always": True,
                      "no_contact_email": contact is not None and not contact.email,
                      "no_contact": contact is None}.get(rules.company_duplicate, False)
            if wanted:
                copies.append(company.email)
        if rules.global_duplicate and (targets or copies):
            copies.append(rules.global_duplicate)
        taken = {t.recipient.lower() for t in targets if t.channel == "email"}
        return targets + [Target("email", address) for address in _unique(copies)
                          if address not in taken]

    def staff_recipients(self, employees: list) -> list:
        """The employees (anything with `id` and `email`) `notifications.employees`
        names: all, none, or those whose email it lists."""
        wanted = self.config.notifications.employees
        if wanted == "none":
            return []
        if wanted == "all":
            return list(employees)
        listed = {a.lower() for a in wanted}
        return [e for e in employees if e.email and e.email.lower() in listed]


@lru_cache(maxsize=16)  # our own From, on every notification
def address_line(name: str, address: str) -> str:
    """An address with its display name, as a From header takes it."""
    from email.utils import formataddr
    return formataddr((name, address)) if name else address


def _unique(addresses: list[str]) -> list[str]:
    seen: dict[str, None] = {}
    for address in addresses:
        if address:
            seen.setdefault(address.lower(), None)
    return list(seen)
