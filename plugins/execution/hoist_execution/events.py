"""Publishing container events to subscribers: one bounded queue per subscriber, never blocking the publisher."""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Iterator

from hoist.containers import ContainerEvent

log = logging.getLogger("hoist.service.v1.execution")

#: Events a subscriber may fall behind by before it is dropped (a client that stopped reading).
MAX_PENDING = 1024

_CLOSED = object()


class Subscription:
    """Events of one namespace (all with ``None``) from the moment of subscribing; iterate, then ``close()``."""

    def __init__(self, bus: EventBus, namespace: str | None) -> None:
        self._bus = bus
        self.namespace = namespace
        self._queue: queue.Queue = queue.Queue(MAX_PENDING + 1)
        self._closed = False

    def _offer(self, event: ContainerEvent) -> None:
        if self._closed or (self.namespace is not None and event.namespace != self.namespace):
            return
        try:
            self._queue.put_nowait(event)
        except queue.Full:
            log.warning("events: a subscriber fell %d events behind; ending its stream", MAX_PENDING)
            self.close()

    def __iter__(self) -> Iterator[ContainerEvent]:
        while True:
            item = self._queue.get()
            if item is _CLOSED:
                return
            yield item

    def close(self) -> None:
        """End the iteration (safe from any thread, more than once)."""
        if self._closed:
            return
        self._closed = True
        self._bus._unsubscribe(self)
        while True:
            try:
                self._queue.put_nowait(_CLOSED)
                return
            except queue.Full:
                try:
                    self._queue.get_nowait()
                except queue.Empty:
                    pass

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class EventBus:
    """Fans events out to the current subscribers."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._subs: list[Subscription] = []

    def subscribe(self, namespace: str | None = None) -> Subscription:
        sub = Subscription(self, namespace)
        with self._lock:
            self._subs.append(sub)
        return sub

    def _unsubscribe(self, sub: Subscription) -> None:
        with self._lock:
            if sub in self._subs:
                self._subs.remove(sub)

    def publish(self, event: ContainerEvent) -> None:
        with self._lock:
            subs = list(self._subs)
        for sub in subs:
            sub._offer(event)

    def close(self) -> None:
        """End every subscription."""
        with self._lock:
            subs = list(self._subs)
        for sub in subs:
            sub.close()


__all__ = ["EventBus", "Subscription", "MAX_PENDING"]
