"""A background loop owned by the app's lifespan: runs its work every ``interval`` seconds, at
once when woken (after a commit that queued work), and again straight away while it reports
more waiting. The outbox worker and the evidence log's sequencer are such loops."""

from __future__ import annotations

import asyncio
import logging
from abc import ABC, abstractmethod
from contextlib import suppress


class BackgroundLoop(ABC):
    """Subclasses implement :meth:`run_once`; start it in lifespan, stop it on the way out."""

    name = "jiefen-loop"
    log = logging.getLogger("jiefen.background")  # a subclass logs under its feature's name
    first_delay = 0.0  # seconds after start before the first round (wake() cuts it short)

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._wake = asyncio.Event()
        self._stopping = False
        self._task: asyncio.Task[None] | None = None

    @abstractmethod
    async def run_once(self) -> bool:
        """Do one round of work; True when more is waiting (run again without pausing)."""

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        """Start the loop on the running event loop (call it from the app's lifespan)."""
        if self.running:
            return
        self._stopping = False
        self._task = asyncio.get_running_loop().create_task(self._run(), name=self.name)

    def wake(self) -> None:
        """Work now rather than at the next interval (after committing work for it)."""
        self._wake.set()

    async def stop(self, grace: float = 10.0) -> None:
        """Let the current round finish (cancelled after ``grace`` seconds) and end the loop."""
        task = self._task
        if task is None:
            return
        self._stopping = True
        self._wake.set()
        _done, pending = await asyncio.wait({task}, timeout=grace)
        if pending:
            task.cancel()
        with suppress(asyncio.CancelledError):
            await task
        self._task = None

    async def finish(self, seconds: float) -> None:
        """After :meth:`stop`: one more go at the waiting work (rounds while more waits), for
        at most ``seconds`` (a graceful stop flushes the outbox so)."""

        async def rounds() -> None:
            while await self.run_once():
                pass

        try:
            await asyncio.wait_for(rounds(), timeout=seconds)
        except TimeoutError:
            self.log.warning(
                "%s: work still waiting after %s s; it goes at next start", self.name, seconds
            )
        except Exception:
            self.log.exception("%s failed while finishing", self.name)

    async def _run(self) -> None:
        if self.first_delay:  # a start-up is not held up by work that can wait
            with suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self.first_delay)
        while not self._stopping:
            self._wake.clear()
            more = False
            try:
                more = await self.run_once()
            except Exception:
                self.log.exception("%s failed; trying again in %s s", self.name, self.interval)
            if more or self._stopping:
                continue
            with suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self.interval)
