"""SMS as a channel: the kind the registry knows (gateway/channels.py).

SMS only goes out (staff answers, status changes, the fallback order): there is no
adapter, and a raw record kept under the name "sms" can only be a mistake, so parsing
one quarantines it with the reason. What sends is outbound/sms.py; `helpgate sms check`
asks the configured provider for the balance (check.py).
"""

from __future__ import annotations

from datetime import datetime

from helpgate.channels.base import Adapter, ChannelKind, Finding, InboundMessage, Services
from helpgate.config.schema import Config

NOT_INBOUND = "SMS is an outbound channel: helpgate receives nothing by SMS"


def parse(raw: bytes, received_at: datetime) -> InboundMessage:
    return InboundMessage(channel="sms", raw=raw, dedupe_key="", received_at=received_at,
                          problem=NOT_INBOUND)


def adapters(config: Config, services: Services) -> list[Adapter]:
    return []


async def check(config: Config) -> list[Finding]:
    from helpgate.channels.sms.check import check as run
    return await run(config)


SMS = ChannelKind(name="sms", parse=parse, adapters=adapters, check=check)
