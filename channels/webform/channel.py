"""The web form as a channel: the kind the registry knows (gateway/channels.py).

Its raw record is a JSON envelope of the submitted fields and the labels shown
(channels/webform/parse.py); its adapter is an aiohttp server on [webform] host:port,
when `[webform] enabled`. Nothing goes out on it: a submitter is answered by email, the
address they gave (notifications.fallback_order).
"""

from __future__ import annotations

from helpgate.channels.base import Adapter, ChannelKind, Services
from helpgate.channels.webform.parse import parse
from helpgate.config.schema import Config


def adapters(config: Config, services: Services) -> list[Adapter]:
    if not config.webform.enabled:
        return []
    from helpgate.channels.webform.adapter import WebformAdapter
    return [WebformAdapter(config.webform, services, texts=config.text,
                           language=config.language,
                           fallback_language=config.fallback_language)]


async def check(config: Config):
    from helpgate.channels.webform.check import check as check_setup
    return await check_setup(config)


WEBFORM = ChannelKind(name="webform", parse=parse, adapters=adapters, check=check)
