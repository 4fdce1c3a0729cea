"""The vk-api session the VK adapter calls the API with.

vk-api posts every call to a hard-coded https://api.vk.ru/method/…; when `[vk]
api_base_url` names another base (a proxy, a local fake) a requests transport adapter
mounted on that prefix rewrites the address. vk-api also retries error 6 ("too many
requests per second") forever, sleeping in the calling thread: here it is retried a few
times and then raised, so a worker thread is never held without end.

vk-api is synchronous: call it in a worker thread (asyncio.to_thread), never on the loop.
"""

from __future__ import annotations

import threading
import time

import requests
import vk_api
from requests.adapters import HTTPAdapter

from helpgate.config.schema import VkConfig

VK_API_BASE = "https://api.vk.ru"
# How often one call is repeated after error 6 before it is raised to the caller.
RPS_RETRIES = 2
RPS_PAUSE = 0.5
# Seconds to wait for VK to connect and to answer an API call.
TIMEOUT = (10.0, 30.0)


class _Rewrite(HTTPAdapter):
    """Sends what vk-api addresses to https://api.vk.ru/method/ to another base."""

    def __init__(self, prefix: str, base_url: str) -> None:
        super().__init__()
        self.prefix, self.base_url = prefix, base_url.rstrip("/") + "/method/"

    def send(self, request, **kwargs):
        request.url = self.base_url + request.url[len(self.prefix):]
        return super().send(request, **kwargs)


class _Timed(requests.Session):
    """vk-api gives requests no timeout: a silent server would hold its thread forever."""

    timeout = TIMEOUT

    def request(self, *args, **kwargs):
        kwargs.setdefault("timeout", self.timeout)
        return super().request(*args, **kwargs)


class _NoStorage(dict):
    """vk-api keeps login state in a JSON file in the working directory; a token needs
    none, so nothing is read or written."""

    def __init__(self, section, filename=None) -> None:
        super().__init__()


class BoundedVkApi(vk_api.VkApiGroup):
    """VkApi with a community token (20 requests a second) and error 6 retried at most
    RPS_RETRIES times per call."""

    def __init__(self, *args, **kwargs) -> None:
        self._depth = threading.local()
        super().__init__(*args, **kwargs)

    def too_many_rps_handler(self, error):
        depth = getattr(self._depth, "value", 0)
        if depth >= RPS_RETRIES:
            return None  # vk-api raises the ApiError: the caller decides when to retry
        self._depth.value = depth + 1
        try:
            time.sleep(RPS_PAUSE)
            return error.try_method()
        finally:
            self._depth.value = depth


def session(config: VkConfig, timeout: tuple[float, float] = TIMEOUT) -> BoundedVkApi:
    """A VkApi for the community of `config`; close `.http` when done. The adapter and the
    transport (outbound/vk.py) share it: one way to VK."""
    http = _Timed()
    http.timeout = timeout
    base = config.api_base_url.rstrip("/")
    if base != VK_API_BASE:
        prefix = VK_API_BASE + "/method/"
        http.mount(prefix, _Rewrite(prefix, base))
    return BoundedVkApi(token=config.token, api_version=config.api_version, session=http,
                        config=_NoStorage)
