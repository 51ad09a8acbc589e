"""The queue between the host's threads, which call emit(), and the emitter's sender thread."""

from __future__ import annotations

import collections
import threading


class Marker:
    """Something queued among the events that is not an event."""

    __slots__ = ()


class Flush(Marker):
    """Set ``done`` once every event queued before this marker has been sent or counted as dropped."""

    __slots__ = ("done",)

    def __init__(self) -> None:
        self.done = threading.Event()


class Stop(Marker):
    """Send what was queued before this marker, then stop; the sender takes nothing after it."""

    __slots__ = ()


class Handoff:
    """Events on their way from ``emit()`` to the sender thread, with markers among them.

    Host threads append to ``items`` without a lock (``deque.append`` is atomic)
    after checking ``len(items) < room``. Only the sender thread writes ``room``: how
    many more events may wait, given what it already holds (0 once it holds its
    byte bound). Two host threads racing at the bound can each pass it by one.

    Items leave only through :meth:`take`, under a lock that also counts the events
    taken; so :meth:`accepted` (taken plus still queued) is exact at any moment
    without a counter on ``emit()``'s path.
    """

    __slots__ = ("items", "room", "wake", "_lock", "_markers", "_taken")

    def __init__(self, *, room: int) -> None:
        self.items: collections.deque[object] = collections.deque()
        self.room = room
        self.wake = threading.Event()
        self._lock = threading.Lock()
        self._markers = 0  # markers now in items
        self._taken = 0  # events (not markers) taken so far

    def put_marker(self, marker: Marker) -> None:
        """Queue ``marker`` behind every event queued so far (it does not count against the bound)."""
        with self._lock:
            self.items.append(marker)
            self._markers += 1
        self.wake.set()

    def take(self, *, reserve: bool) -> list[object]:
        """Everything queued now, oldest first; what is appended meanwhile stays for the next call.

        With ``reserve`` (the sender thread only), ``room`` shrinks by what is taken
        before it is popped, so a host thread never sees the space freed before the
        room shrank; the sender then owns those events and sets ``room`` again.
        """
        with self._lock:
            count = len(self.items)
            if reserve:
                self.room -= count
            taken = [self.items.popleft() for _ in range(count)]  # only take() pops, so these exist
            markers = sum(1 for item in taken if isinstance(item, Marker))
            self._markers -= markers
            self._taken += count - markers
            if reserve:
                self.room += markers
        return taken

    def accepted(self) -> int:
        """Events ever queued: those taken and those still waiting."""
        with self._lock:
            return self._taken + len(self.items) - self._markers

    def waiting(self) -> int:
        """Events queued and not yet taken."""
        with self._lock:
            return len(self.items) - self._markers
