"""Micro-batching: images from concurrent requests are encoded together.

When other image searches are in flight (``arrived`` / ``left`` count them, from the request's start), the
first image to reach the encoder opens a window of ``window_ms``, and every image that arrives within it (up
to ``max_batch``) joins one call of the encoder, grouped by image size; a lone request is encoded at once, in
its own thread.
``window_ms = 0`` encodes each request on its own. ``benchmarks/service.py`` measures whether it pays.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future

import numpy as np


class MicroBatcher:
    def __init__(self, encode: Callable[[np.ndarray], np.ndarray], window_ms: float = 3.0, max_batch: int = 64) -> None:
        self._encode, self.window, self.max_batch = encode, window_ms / 1000, max_batch
        self._queue: queue.Queue = queue.Queue()
        self._thread: threading.Thread | None = None
        self._in_flight, self._count_lock = 0, threading.Lock()
        if self.window > 0:
            self._thread = threading.Thread(target=self._run, name="hashdistill-batcher", daemon=True)
            self._thread.start()

    def arrived(self) -> None:
        """A search by image has started (it will reach ``encode`` after decoding its upload)."""
        with self._count_lock:
            self._in_flight += 1

    def left(self) -> None:
        with self._count_lock:
            self._in_flight -= 1

    def encode(self, image: np.ndarray) -> np.ndarray:
        """One image's continuous code (blocks until its batch is encoded)."""
        if self._thread is None or (self._in_flight <= 1 and self._queue.empty()):  # alone: no queue hop
            return self._encode(image[None])[0]
        done: Future = Future()
        self._queue.put((image, done))
        return done.result()

    def close(self) -> None:
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout=5)

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch, deadline = [first], time.monotonic() + self.window
            while len(batch) < self.max_batch and (self._in_flight > len(batch) or not self._queue.empty()):
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                try:
                    item = self._queue.get(timeout=left)
                except queue.Empty:
                    break
                if item is None:
                    self._queue.put(None)
                    break
                batch.append(item)
            groups: dict[tuple, list] = {}
            for image, done in batch:
                groups.setdefault(image.shape, []).append((image, done))
            for items in groups.values():
                try:
                    codes = self._encode(np.stack([image for image, _ in items]))
                except Exception as e:  # the requests of this group fail, the batcher goes on
                    for _, done in items:
                        done.set_exception(e)
                    continue
                for (_, done), code in zip(items, codes):
                    done.set_result(code)
