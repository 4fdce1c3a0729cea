"""The registry of channels by name: the one place that knows which channels exist.

Each entry pairs a channel's inbound side (a `ChannelKind` from its folder in channels/:
its adapters, and how a kept raw record becomes a message again) with its outbound side
(the transport in outbound/ that sends to people on it). `helpgate run` builds the
adapters and transports from here, and the pipeline's replay and crash recovery parse
kept records through it; nothing else branches on a channel's name.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from helpgate.channels.base import ChannelKind, InboundMessage
from helpgate.channels.mail.channel import EMAIL
from helpgate.channels.sms.channel import SMS
from helpgate.channels.telegram.channel import TELEGRAM
from helpgate.channels.vk.channel import VK
from helpgate.channels.webform.channel import WEBFORM
from helpgate.config.schema import Config
from helpgate.outbound import email
from helpgate.outbound.base import Transport


@dataclass(frozen=True, slots=True)
class Registered:
    kind: ChannelKind
    # The transport for the channel, or None when the config does not set it up.
    transport: Callable[[Config], Transport | None]
    # False for a channel nothing is ever sent on (the web form): no `--via` names it.
    sends: bool = True

    @property
    def name(self) -> str:
        return self.kind.name


def lazy_transport(module: str, configured: Callable[[Config], object]
                   ) -> Callable[[Config], Transport | None]:
    """`module`'s transport(config), imported only when the config sets the channel up: a
    messenger's client library costs seconds to import, and every command would pay."""
    def build(config: Config) -> Transport | None:
        if not configured(config):
            return None
        return importlib.import_module(module).transport(config)
    return build


CHANNELS: dict[str, Registered] = {entry.name: entry for entry in (
    Registered(EMAIL, email.transport),
    Registered(TELEGRAM, lazy_transport("helpgate.outbound.telegram",
                                        lambda config: config.telegram.token)),
    Registered(VK, lazy_transport("helpgate.outbound.vk", lambda config: config.vk.token)),
    # Outbound only: no adapters; its transport sends through the [sms] provider.
    Registered(SMS, lazy_transport("helpgate.outbound.sms", lambda config: config.sms.provider)),
    # Inbound only: a submitter is answered by email (notifications.fallback_order).
    Registered(WEBFORM, lambda config: None, sends=False),
)}


def sending_channels() -> list[str]:
    """The channels a staff answer may be sent on (`helpgate reply --via`)."""
    return [name for name, entry in CHANNELS.items() if entry.sends]


def parse_kept(channel: str, raw: bytes, received_at: datetime) -> InboundMessage:
    """A kept raw record -> its message, by the channel it came through. A record of a
    channel no longer known is a message to keep in quarantine, with the reason."""
    entry = CHANNELS.get(channel)
    if entry is None:
        return InboundMessage(channel=channel, raw=raw, dedupe_key="", received_at=received_at,
                              problem=f"no channel {channel!r} is known to read this message")
    return entry.kind.parse(raw, received_at)


def transports(config: Config) -> dict[str, Transport]:
    """A transport for each channel the config sets up to send on."""
    found = {name: entry.transport(config) for name, entry in CHANNELS.items()}
    return {name: transport for name, transport in found.items() if transport is not None}
