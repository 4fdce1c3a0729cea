"""The Services an adapter is built with (channels/base.py), over a test's pipeline: what
`helpgate run` hands its adapters, minus the worker processes."""

from __future__ import annotations

from helpgate.channels.base import Services
from helpgate.gateway.channels import CHANNELS
from helpgate.ticketstore.repository import StoreCursors


def services_for(pipeline, ingest=None, parse_many=None) -> Services:
    async def parse_here(channel: str, raws: list[bytes]):
        now = pipeline.clock()
        return [CHANNELS[channel].kind.parse(raw, now) for raw in raws]
    return Services(ingest=ingest or pipeline.ingest_many, parse_many=parse_many or parse_here,
                    cursors=StoreCursors(pipeline.store, pipeline.clock), clock=pipeline.clock)
