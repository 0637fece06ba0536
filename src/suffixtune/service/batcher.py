"""Dynamic micro-batching: concurrent requests are gathered into one model call."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any

logger = logging.getLogger(__name__)

Results = list[dict[str, Any]]


@dataclass
class Pending:
    rows: Sequence[Any]
    key: Hashable  # what `run` is told besides the rows: requests with equal keys share a call
    future: asyncio.Future = field(repr=False)


@dataclass
class BatchStats:
    requests: int = 0
    batches: int = 0  # model calls
    texts: int = 0
    largest_batch_requests: int = 0
    largest_batch_texts: int = 0
    failed_batches: int = 0  # calls that raised; their requests were retried one by one

    def to_dict(self) -> dict[str, float]:
        mean = self.requests / self.batches if self.batches else 0.0
        return {**self.__dict__, "mean_requests_per_batch": mean}


class MicroBatcher:
    """Once a request arrives, wait up to `max_wait_ms` for others, then run them all in one call of `run`.

    A batch closes early at `max_batch_texts` texts. Requests with different keys (task sets, decoding settings)
    run as separate calls. `run(rows, key)` runs in one worker thread, so the event loop keeps accepting requests meanwhile. If a
    gathered call fails, each of its requests runs alone, so one bad request cannot fail the others.
    """

    def __init__(
        self, run: Callable[[list[Any], Hashable], Results], max_batch_texts: int = 64, max_wait_ms: float = 5.0,
        executor: concurrent.futures.ThreadPoolExecutor | None = None,
    ):
        """`executor`: the thread model calls run in; batchers that share a model share one (and its owner shuts it)."""
        self.run = run
        self.max_batch_texts = max_batch_texts
        self.max_wait = max_wait_ms / 1000
        self.stats = BatchStats()
        self.queue: asyncio.Queue[Pending] | None = None
        self.queued_texts = 0
        self.held: Pending | None = None  # taken from the queue, but it would have overfilled the last batch
        self.arrived: asyncio.Event | None = None
        self.worker: asyncio.Task | None = None
        self.owns_executor = executor is None
        self.executor = executor or concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="suffixtune-model")

    async def start(self) -> None:
        self.queue = asyncio.Queue()
        self.queued_texts = 0
        self.arrived = asyncio.Event()
        self.worker = asyncio.create_task(self.gather_forever())

    async def stop(self) -> None:
        if self.worker is not None:
            self.worker.cancel()
            await asyncio.gather(self.worker, return_exceptions=True)
        if self.owns_executor:
            self.executor.shutdown(wait=True)

    async def submit(self, rows: Sequence[Any], key: Hashable) -> Results:
        if self.queue is None:
            raise RuntimeError("MicroBatcher.start() was not awaited")
        future = asyncio.get_running_loop().create_future()
        self.queue.put_nowait(Pending(rows, key, future))
        self.queued_texts += len(rows)
        self.arrived.set()
        return await future

    def take(self, pending: Pending) -> Pending:
        self.queued_texts -= len(pending.rows)
        return pending

    async def gather_forever(self) -> None:
        """Never cancels a queue.get() (which could drop a request): waits on an event, then drains the queue."""
        loop = asyncio.get_running_loop()
        while True:
            batch, self.held = [self.held or self.take(await self.queue.get())], None
            texts, deadline = len(batch[0].rows), loop.time() + self.max_wait
            while texts + self.queued_texts < self.max_batch_texts and (left := deadline - loop.time()) > 0:
                self.arrived.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.arrived.wait(), left)
            while texts < self.max_batch_texts and not self.queue.empty():
                pending = self.take(self.queue.get_nowait())
                if texts + len(pending.rows) > self.max_batch_texts:
                    self.held = pending  # first in the next batch
                    break
                batch.append(pending)
                texts += len(pending.rows)
            by_key: dict[Hashable, list[Pending]] = {}
            for pending in batch:
                by_key.setdefault(pending.key, []).append(pending)
            for group in by_key.values():
                await self.run_group(group)

    async def run_group(self, group: list[Pending]) -> None:
        rows = [row for pending in group for row in pending.rows]
        try:
            results = await self.call(rows, group[0].key)
        except Exception as error:
            self.stats.failed_batches += 1
            if len(group) == 1:
                settle(group[0].future, error=error)
                return
            logger.warning("a batch of %d requests failed (%s); running each alone", len(group), error)
            for pending in group:
                await self.run_group([pending])
            return
        self.stats.requests += len(group)
        self.stats.largest_batch_requests = max(self.stats.largest_batch_requests, len(group))
        self.stats.largest_batch_texts = max(self.stats.largest_batch_texts, len(rows))
        start = 0
        for pending in group:
            settle(pending.future, results[start : start + len(pending.rows)])
            start += len(pending.rows)

    async def call(self, rows: list[Any], key: Hashable) -> Results:
        self.stats.batches += 1
        self.stats.texts += len(rows)
        return await asyncio.get_running_loop().run_in_executor(self.executor, self.run, rows, key)


def settle(future: asyncio.Future, result: Results | None = None, error: BaseException | None = None) -> None:
    if future.done():  # the client went away
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)
