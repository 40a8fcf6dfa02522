"""Where live events are kept and handed over: one piece shared by every event source.

The webhook listener (Tiledesk posts to you) and the realtime feed (you subscribe) both receive
:class:`~tiledesk_tutorial.models.Event` objects on threads of their own. Each hands them to an
:class:`EventHub`, which

- keeps the last ``max_events`` (bounded memory) and drops repeats by ``Event.dedupe_key`` (a
  retried delivery, or a message seen again in a re-subscription's snapshot);
- runs the callbacks on one long-lived worker thread, never on the thread that received the event
  (widgets touched from many threads exhaust a kernel's sockets under a burst);
- gives each callback the events in the order they were kept: keeping an event and queueing it for
  the callbacks happen under one lock, so no two receiving threads can swap them.

Two kinds of callbacks: ``on_event(fn)`` gets one event at a time (what a learner writes);
``on_events(fn, key=..., min_interval=...)`` gets every event kept since its last call as one list,
at most once every ``min_interval`` seconds and always once more after the last event, so a view
redraws a few times per burst instead of once per event (the worker waits for the interval on its
condition, never in a callback, so the other callbacks are not held up). A callback registered
again under the same key replaces the first, so a re-run notebook cell does not call it twice.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from tiledesk_tutorial.errors import InvalidInputError
from tiledesk_tutorial.models import Event

__all__ = [
    "BatchCallback",
    "EventCallback",
    "EventHub",
    "EventPredicate",
    "EventSource",
    "Rerun",
]

logger = logging.getLogger("tiledesk_tutorial.event_hub")

EventCallback = Callable[[Event], Any]
BatchCallback = Callable[[list[Event]], Any]
EventPredicate = Callable[[Event], bool]


@runtime_checkable
class EventSource(Protocol):
    """What a view or a tool follows: the webhook listener or the realtime feed.

    Both expose their :class:`EventHub`'s callbacks and reads, plus whether they are running
    (``isinstance(x, EventSource)`` checks that the methods are there).
    """

    @property
    def running(self) -> bool:
        """Whether the source is receiving now."""
        ...

    @property
    def events(self) -> list[Event]:
        """The kept events, oldest first."""
        ...

    def on_events(
        self, callback: BatchCallback, *, key: Hashable, min_interval: float = 0.0
    ) -> BatchCallback:
        """Call ``callback(batch)`` with the newly kept events, at most once every
        ``min_interval`` seconds; ``key`` replaces an earlier callback."""
        ...

    def remove_callback(self, callback_or_key: Any) -> None:
        """Stop calling a callback (given itself, or its key)."""
        ...

    def wait_for(
        self, predicate: EventPredicate | None = None, count: int = 1, timeout: float = 10
    ) -> list[Event]:
        """Wait until ``count`` kept events match ``predicate``."""
        ...


_STOP = object()


@dataclass
class _Rerun:
    """An event handed to the ``on_event`` callbacks again (a replay), and how that went."""

    event: Event
    done: threading.Event = field(default_factory=threading.Event)
    ran: int = 0
    errors: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Rerun:
    """What :meth:`EventHub.rerun` did: how many callbacks ran, and the errors they raised.

    ``finished`` is ``False`` when the callbacks were still running at the timeout.
    """

    callbacks: int
    errors: tuple[str, ...]
    finished: bool = True

    @property
    def ok(self) -> bool:
        """Every callback ran, and none raised."""
        return self.finished and not self.errors


@dataclass
class _Batcher:
    """A batch callback, the events it has not had yet, and when it may be called again."""

    key: Hashable
    callback: BatchCallback
    min_interval: float
    pending: list[Event] = field(default_factory=list)
    next_at: float = 0.0  # time.monotonic() before which it is not called again


class EventHub:
    """A bounded, thread-safe store of events with callbacks on one worker thread.

    Args:
        max_events: how many of the newest events to keep.
        name: the worker thread's name (it shows in thread dumps and leak checks); it may be
            changed until :meth:`start`.
        label: what the events are, in log lines (``"webhook"`` gives "webhook callback ...
            failed").
    """

    def __init__(
        self, max_events: int = 1000, *, name: str = "tiledesk-events", label: str = "event"
    ) -> None:
        if not isinstance(max_events, int) or max_events < 1:
            raise InvalidInputError(
                f"max_events must be a whole number of 1 or more, not {max_events!r}"
            )
        self.max_events = max_events
        self.name = name
        self.label = label
        self._events: deque[tuple[int, Event]] = deque(maxlen=max_events)
        # Repeats come within seconds (retries) or minutes (a reconnect's snapshot): remembering
        # many more keys than events costs little and keeps a scrolled-out event from coming back.
        self._keys: OrderedDict[Hashable, None] = OrderedDict()
        self._max_keys = max(10_000, 10 * max_events)
        self._seq = 0
        self._cond = threading.Condition()
        self._inbox: deque[Any] = deque()
        self._each: list[tuple[Hashable, EventCallback]] = []
        self._batchers: list[_Batcher] = []
        self._worker: threading.Thread | None = None
        self._busy = False
        self.duplicates = 0
        self.evicted = 0
        self.callback_errors = 0
        self.last_callback_error: str | None = None

    # -- callbacks -------------------------------------------------------------------------
    def on_event(self, callback: EventCallback, *, key: Hashable | None = None) -> EventCallback:
        """Call ``callback(event)`` for each kept event, on the worker thread, in order.

        ``key`` names the callback: registering another under the same key replaces it. Without
        one, a named function's module and name are its key (so re-running the cell that defines
        and registers it replaces it); a lambda is always added. Returns ``callback`` (it can be
        used as a decorator). Exceptions are counted and logged (the first as a warning), never
        raised into the source.
        """
        if not callable(callback):
            raise TypeError(f"on_event needs a function taking one event, got {callback!r}")
        name = _key_of(callback) if key is None else key
        with self._cond:
            self._each = [(k, fn) for k, fn in self._each if name is None or k != name]
            self._each.append((name if name is not None else object(), callback))
        return callback

    def on_events(
        self, callback: BatchCallback, *, key: Hashable, min_interval: float = 0.0
    ) -> BatchCallback:
        """Call ``callback(events)`` with every event kept since its last call (a non-empty list,
        oldest first), on the worker thread. ``key`` replaces an earlier callback with that key.

        With ``min_interval`` (seconds), calls are at least that far apart: the events of a burst
        gather into one call, and one more call comes for the last of them. The worker waits for
        the interval between other work, so ``on_event`` callbacks are not delayed.
        """
        if not callable(callback):
            raise TypeError(f"on_events needs a function taking a list of events, got {callback!r}")
        if isinstance(min_interval, bool) or not isinstance(min_interval, int | float):
            raise TypeError(f"min_interval must be a number of seconds, not {min_interval!r}")
        batcher = _Batcher(key, callback, max(0.0, float(min_interval)))
        with self._cond:
            self._batchers = [b for b in self._batchers if b.key != key]
            self._batchers.append(batcher)
        return callback

    def remove_callback(self, callback_or_key: Any) -> None:
        """Stop calling a callback, given itself or its key; unknown ones are ignored."""

        def kept(entry: tuple[Hashable, Any]) -> bool:
            key, fn = entry
            return fn is not callback_or_key and key != callback_or_key

        with self._cond:
            self._each = [entry for entry in self._each if kept(entry)]
            self._batchers = [b for b in self._batchers if kept((b.key, b.callback))]

    # -- keeping events --------------------------------------------------------------------
    def add(self, event: Event, persist: Callable[[Event], None] | None = None) -> bool:
        """Keep ``event`` unless it repeats one already kept; return whether it was kept.

        ``persist`` (e.g. a file append) runs first, under the hub's lock: if it raises, nothing
        is kept, so a retry of the same delivery can succeed later. A kept event is queued for the
        callbacks in the same critical section, so callbacks see events in the order they were
        kept, whatever the number of threads adding them.
        """
        key = event.dedupe_key
        with self._cond:
            if key is not None and key in self._keys:
                self.duplicates += 1
                return False
            if persist is not None:
                persist(event)
            if key is not None:
                self._keys[key] = None
                if len(self._keys) > self._max_keys:
                    self._keys.popitem(last=False)
            if len(self._events) == self.max_events:
                self.evicted += 1
            self._seq += 1
            self._events.append((self._seq, event))
            if self._worker is not None:
                self._inbox.append(event)
                for batcher in self._batchers:
                    batcher.pending.append(event)
            self._cond.notify_all()
        return True

    def seen(self, event: Event) -> bool:
        """Whether an event with the same key was kept already (without keeping anything)."""
        key = event.dedupe_key
        with self._cond:
            return key is not None and key in self._keys

    def rerun(self, event: Event, timeout: float = 10.0) -> Rerun:
        """Hand ``event`` to the ``on_event`` callbacks again (a replay), and wait for them.

        The event is not kept again, and batch callbacks (views, which show it already) are not
        called. The callbacks run on the worker thread as always, after the events queued before;
        called from a callback, they run at once on that thread. Errors are counted as usual and
        returned. Raises :class:`InvalidInputError` when the worker is not running.
        """
        item = _Rerun(event)
        with self._cond:
            if self._worker is None:
                raise InvalidInputError(
                    "the callbacks' worker is not running: start the source first"
                )
            on_worker = self._worker is threading.current_thread()
            if not on_worker:
                self._inbox.append(item)
                self._cond.notify_all()
            each = list(self._each)
        if on_worker:
            self._rerun(item, each)
        finished = item.done.wait(timeout)
        return Rerun(item.ran, tuple(item.errors), finished)

    def _rerun(self, item: _Rerun, each: list[tuple[Hashable, EventCallback]]) -> None:
        try:
            for _, callback in each:
                error = self._call(callback, item.event)
                item.ran += 1
                if error is not None:
                    item.errors.append(error)
        finally:
            item.done.set()

    # -- reading ---------------------------------------------------------------------------
    def snapshot(self) -> list[Event]:
        """A copy of the kept events, oldest first."""
        with self._cond:
            return [event for _, event in self._events]

    def last(self) -> Event | None:
        """The most recently kept event, or ``None``."""
        with self._cond:
            return self._events[-1][1] if self._events else None

    def __len__(self) -> int:
        with self._cond:
            return len(self._events)

    def clear(self) -> None:
        """Forget the kept events (repeats of them are still recognised and dropped)."""
        with self._cond:
            self._events.clear()

    @property
    def pending(self) -> int:
        """Events kept but not yet handed to the callbacks (a call running counts as one)."""
        with self._cond:
            waiting = max([len(self._inbox), *(len(b.pending) for b in self._batchers)])
            return waiting + (1 if self._busy else 0)

    @property
    def queued(self) -> int:
        """Events kept and waiting behind those the callbacks are handling now (a callback that
        sees 0 here handles the last of a burst)."""
        with self._cond:
            return len(self._inbox)

    def wait(self, predicate: EventPredicate | None, count: int, timeout: float) -> list[Event]:
        """The kept events matching ``predicate``, as soon as there are ``count`` of them.

        Events already kept count. Returns what matched so far (fewer than ``count``) when
        ``timeout`` seconds pass. The predicate runs on the calling thread, outside the lock.
        """
        deadline = time.monotonic() + timeout
        with self._cond:
            fresh = [event for _, event in self._events]
            seen = self._seq
        matches = [e for e in fresh if predicate is None or predicate(e)]
        while len(matches) < count:
            with self._cond:
                while self._seq == seen:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        return matches
                    self._cond.wait(remaining)
                fresh = [event for number, event in self._events if number > seen]
                seen = self._seq
            matches.extend(e for e in fresh if predicate is None or predicate(e))
        return matches

    def wait_idle(self, timeout: float = 10.0) -> bool:
        """Wait until every kept event has been through the callbacks; False after ``timeout``."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._worker is not None and self._due_work():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(remaining)
        return True

    # -- the worker ------------------------------------------------------------------------
    def start(self) -> None:
        """Start the callbacks' worker thread (idempotent)."""
        with self._cond:
            if self._worker is not None:
                return
            self._inbox.clear()
            for batcher in self._batchers:
                batcher.pending.clear()
            self._worker = threading.Thread(target=self._run, name=self.name, daemon=True)
            self._worker.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Run the callbacks still due, then stop the worker (idempotent; callable from a
        callback, which then does not wait for itself)."""
        with self._cond:
            worker, self._worker = self._worker, None
            if worker is None:
                return
            self._inbox.append(_STOP)
            self._cond.notify_all()
        if worker is not threading.current_thread():
            worker.join(timeout)
            if worker.is_alive():
                logger.warning("a callback of %s still runs after %.0f s", self.name, timeout)

    def _due_work(self) -> bool:
        """Whether events wait for a callback (caller holds the lock)."""
        return bool(self._inbox) or self._busy or any(b.pending for b in self._batchers)

    def _run(self) -> None:
        while True:
            with self._cond:
                while True:
                    moment = time.monotonic()
                    due = [b for b in self._batchers if b.pending and b.next_at <= moment]
                    if self._inbox or due:
                        break
                    waits = [b.next_at - moment for b in self._batchers if b.pending]
                    self._cond.wait(min(waits) if waits else None)
                events: list[Event | _Rerun] = []
                stop = False
                while self._inbox:
                    item = self._inbox.popleft()
                    if item is _STOP:
                        stop = True
                        break
                    events.append(item)
                if stop:  # what is still gathering is handed over now
                    due = [b for b in self._batchers if b.pending]
                batches = [(b.callback, b.pending) for b in due]
                for batcher in due:
                    batcher.pending = []
                    batcher.next_at = moment + batcher.min_interval
                each = list(self._each)
                self._busy = bool(events or batches)
            try:
                for event in events:
                    if isinstance(event, _Rerun):
                        self._rerun(event, each)
                        continue
                    for _, callback in each:
                        self._call(callback, event)
                for callback, batch in batches:
                    self._call(callback, batch)
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()
            if stop:
                return

    def _call(self, callback: Callable[[Any], Any], argument: Any) -> str | None:
        """Run one callback; return its error as one line (``None`` when it did not raise)."""
        try:
            callback(argument)
        except Exception as exc:
            name = getattr(callback, "__qualname__", repr(callback))
            error = f"{name}: {type(exc).__name__}: {exc}"
            with self._cond:
                self.callback_errors += 1
                first = self.callback_errors == 1
                self.last_callback_error = error
            if first:
                logger.warning(
                    "%s callback %s failed: %s: %s (further failures are counted in .stats)",
                    self.label,
                    name,
                    type(exc).__name__,
                    exc,
                )
            else:
                logger.debug("%s callback %s failed", self.label, name, exc_info=True)
            return error
        return None


def _key_of(callback: Callable[..., Any]) -> tuple[str, str] | None:
    """A named function's identity across notebook re-runs; ``None`` for lambdas and others."""
    name = getattr(callback, "__qualname__", None)
    if not isinstance(name, str) or "<lambda>" in name or not hasattr(callback, "__code__"):
        return None
    return (getattr(callback, "__module__", "") or "", name)
