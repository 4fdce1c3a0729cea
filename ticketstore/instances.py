"""Running gateway instances and their heartbeats (R-OUT-6).

Several gateways may share one database. Each registers here when its outbox worker
starts and records a heartbeat while it runs, and every outbox row it claims carries its
id. When an instance falls silent (kill -9, a lost machine) its claims are known to be
orphaned as soon as the heartbeat is stale — nobody waits out the outbox lease — while a
live instance's claims are left alone however long its relay takes.

Heartbeats use the gateways' own clocks: instances sharing a database must keep their
clocks in step (NTP) to well within `outbox.dead_after`.
"""

from __future__ import annotations

import os
import socket
import uuid
from datetime import datetime, timedelta

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from helpgate.ticketstore.models import GatewayInstance

INSTANCES = GatewayInstance.__table__


def new_instance_id() -> str:
    """Unique per process start: a restarted gateway is a new instance."""
    return f"{socket.gethostname()[:40]}-{os.getpid()}-{uuid.uuid4().hex[:12]}"


def beat(session: Session, instance: str, now: datetime) -> None:
    """Record that `instance` is alive; registers it if it is not (yet, or any more:
    one taken for dead while it was paused comes back as alive)."""
    done = session.execute(update(INSTANCES).where(INSTANCES.c.id == instance)
                           .values(heartbeat_at=now))
    if done.rowcount == 0:
        session.execute(INSTANCES.insert().values(
            id=instance, host=socket.gethostname()[:255], pid=os.getpid(), started_at=now,
            heartbeat_at=now))


def deregister(session: Session, instance: str) -> None:
    """A clean stop: the instance has finished what it claimed and leaves."""
    session.execute(delete(INSTANCES).where(INSTANCES.c.id == instance))


def live_instances(session: Session, now: datetime, dead_after: timedelta):
    """A subquery of the ids whose heartbeat is recent enough."""
    return select(INSTANCES.c.id).where(INSTANCES.c.heartbeat_at > now - dead_after)


def forget_dead(session: Session, now: datetime, dead_after: timedelta) -> int:
    """Remove instances silent for longer than `dead_after` (after their claims were
    released); returns how many."""
    return session.execute(delete(INSTANCES).where(
        INSTANCES.c.heartbeat_at <= now - dead_after)).rowcount

