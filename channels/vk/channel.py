"""VK as a channel: the kind the registry knows (gateway/channels.py).

Its raw record is a JSON envelope of the event and the files fetched for it
(channels/vk/parse.py); its adapter reads one community by long poll or the Callback API,
when `[vk] token` is set.
"""

from __future__ import annotations

from helpgate.channels.base import Adapter, ChannelKind, Finding, Services
from helpgate.channels.vk.parse import parse
from helpgate.config.schema import Config


def adapters(config: Config, services: Services) -> list[Adapter]:
    if not config.vk.token:
        return []
    # Imported only when used: the client library costs seconds to import.
    from helpgate.channels.vk.adapter import VkAdapter
    return [VkAdapter(config.vk, services, config.mail.max_message_size)]


async def check(config: Config) -> list[Finding]:
    from helpgate.channels.vk.check import check as run
    return await run(config)


VK = ChannelKind(name="vk", parse=parse, adapters=adapters, check=check)
