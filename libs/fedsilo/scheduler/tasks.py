"""Tasks handed out to sites: the open ones, each site's inbox, and the long polls waiting on
them. A task stays open until its site answers or its phase closes; a closed task is skipped
when its site next polls."""

from __future__ import annotations

import threading
import time
from collections import deque

from fedsilo.scheduler.interfaces import TaskInfo
from fedsilo.v1 import scheduler_pb2

# A long poll never holds a handler thread longer than this.
MAX_WAIT_S = 60.0


class TaskBoard:
    """Guarded by the scheduler's lock, which every method expects to be held (wait_for_task
    takes it itself)."""

    def __init__(self, lock: threading.RLock, stopping: threading.Event) -> None:
        self._lock = lock
        self._stopping = stopping
        self.open: dict[str, TaskInfo] = {}
        self._inbox: dict[str, deque[scheduler_pb2.Task]] = {}
        # Each long poll waits on its own condition: a new task wakes its client alone, and
        # the round's events wake only the driver and the aggregators (not every site).
        self._pollers: dict[str, list[threading.Condition]] = {}

    def post(self, info: TaskInfo, task: scheduler_pb2.Task) -> None:
        self.open[info.task_id] = info
        self._inbox.setdefault(info.client_id, deque()).append(task)
        for poller in self._pollers.get(info.client_id, []):
            poller.notify()

    def close(self, task_id: str) -> None:
        del self.open[task_id]

    def drop_job(self, job_id: str) -> None:
        for task_id in [t for t, info in self.open.items() if info.job_id == job_id]:
            del self.open[task_id]
        # Inboxes of clients that stopped polling would otherwise keep closed tasks forever.
        for client_id in list(self._inbox):
            inbox = deque(task for task in self._inbox[client_id] if task.task_id in self.open)
            if inbox:
                self._inbox[client_id] = inbox
            else:
                del self._inbox[client_id]

    def wait_for_task(self, client_id: str, wait_s: float) -> scheduler_pb2.Task:
        deadline = time.monotonic() + max(0.0, min(wait_s, MAX_WAIT_S))
        with self._lock:
            poller = threading.Condition(self._lock)
            self._pollers.setdefault(client_id, []).append(poller)
            try:
                while True:
                    task = self._next_task(client_id)
                    if task is not None:
                        return task
                    remaining = deadline - time.monotonic()
                    if remaining <= 0 or self._stopping.is_set():
                        return scheduler_pb2.Task(kind=scheduler_pb2.TASK_KIND_NONE)
                    poller.wait(timeout=remaining)
            finally:
                pollers = self._pollers[client_id]
                pollers.remove(poller)
                if not pollers:
                    del self._pollers[client_id]

    def _next_task(self, client_id: str) -> scheduler_pb2.Task | None:
        """The client's oldest task that is still open; tasks of closed phases are skipped."""
        inbox = self._inbox.get(client_id)
        while inbox:
            task = inbox.popleft()
            if task.task_id in self.open:
                return task
        self._inbox.pop(client_id, None)
        return None

    def wake_all(self) -> None:
        for pollers in self._pollers.values():
            for poller in pollers:
                poller.notify()
