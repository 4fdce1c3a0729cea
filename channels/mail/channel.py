"""Email as a channel: the kind the registry knows (gateway/channels.py).

Its raw record is the mail as received; its adapters are the SMTP/LMTP endpoint (when
`[mail.endpoint]` is enabled) and one reader per `[[mail.imap]]` mailbox.
"""

from __future__ import annotations

from helpgate.channels.base import Adapter, ChannelKind, Services
from helpgate.channels.mail.imap import ImapMailbox
from helpgate.channels.mail.parse import parse_safely
from helpgate.channels.mail.smtp import MailEndpoint
from helpgate.config.schema import Config


def adapters(config: Config, services: Services) -> list[Adapter]:
    found: list[Adapter] = []
    if config.mail.endpoint.enabled:
        found.append(MailEndpoint(config, services))
    found += [ImapMailbox(mailbox, services, config.mail.max_message_size)
              for mailbox in config.mail.imap]
    return found


EMAIL = ChannelKind(name="email", parse=parse_safely, adapters=adapters, heavy_parse=True)
