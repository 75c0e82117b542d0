"""`BatchSource`: random access to batches, with the data order a pure function of
(seed, step), and the unigram baseline.

Train: global row r of step s is item `perm_e[(s * G + r) % N]` with e = (s * G + r) // N and
`perm_e = default_rng([seed, e]).permutation(N)` (G = global batch, N = items). Each process
computes only its contiguous slice of rows, so resuming at any step, on any number of
processes, reproduces the same global batch. Eval: items in stored order, once.
"""

from __future__ import annotations

import math
import queue
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence

import numpy as np

Batch = dict[str, np.ndarray]
# make_rows(item_indices [B], step, global_row_ids [B]) -> batch with leading dim B
MakeRows = Callable[[np.ndarray, int, np.ndarray], Batch]


class BatchSource:
    """Batches of one split for one process.

    Args:
      num_items: rows (packed rows, or NSP anchors) in the split.
      make_rows: builds the batch of the given items (objective applied, per-row rng).
      global_batch_size: rows per step over all processes.
      process_index, process_count: this process gets rows
        [process_index * local, (process_index + 1) * local) of every global batch.
      seed: data-order seed.
      train: cycle over shuffled epochs (True) or go over the items once in order (False).
      num_eval_batches: eval only; None = the whole split.
      target_counts: callable returning per-token counts of the split's loss targets
        (for `unigram_entropy`).
    """

    def __init__(
        self,
        num_items: int,
        make_rows: MakeRows,
        *,
        global_batch_size: int,
        process_index: int = 0,
        process_count: int = 1,
        seed: int = 0,
        train: bool = True,
        num_eval_batches: int | None = None,
        target_counts: Callable[[int], np.ndarray] | None = None,
    ):
        if num_items < 1:
            raise ValueError(f"num_items={num_items}: the split is empty")
        if global_batch_size < 1 or global_batch_size % process_count:
            raise ValueError(
                f"global_batch_size={global_batch_size} must be a positive multiple of "
                f"process_count={process_count}"
            )
        if not 0 <= process_index < process_count:
            raise ValueError(f"process_index={process_index} not in [0, {process_count})")
        self.num_items = num_items
        self.global_batch_size = global_batch_size
        self.local_batch_size = global_batch_size // process_count
        self.process_index = process_index
        self.process_count = process_count
        self.seed = seed
        self.train = train
        self._make_rows = make_rows
        self._target_counts = target_counts
        self._perms: dict[int, np.ndarray] = {}
        self._lock = threading.Lock()
        whole = math.ceil(num_items / global_batch_size)
        self.num_eval_batches = whole if num_eval_batches is None else min(num_eval_batches, whole)

    @property
    def steps_per_epoch(self) -> int:
        return math.ceil(self.num_items / self.global_batch_size)

    def _local_rows(self) -> np.ndarray:
        start = self.process_index * self.local_batch_size
        return np.arange(start, start + self.local_batch_size)

    def _permutation(self, epoch: int) -> np.ndarray:
        with self._lock:
            if epoch not in self._perms:
                if len(self._perms) >= 4:
                    self._perms.pop(min(self._perms))
                self._perms[epoch] = np.random.default_rng([self.seed, epoch]).permutation(
                    self.num_items
                )
            return self._perms[epoch]

    def get_batch(self, step: int) -> Batch:
        """The local slice of the global batch at `step` (train: any step >= 0; eval: the
        `step`-th eval batch, with rows past the end zero-padded: weights 0, segment_ids 0)."""
        if step < 0:
            raise ValueError(f"step={step} must be >= 0")
        rows = self._local_rows()
        flat = step * self.global_batch_size + rows  # [B] global sample indices
        if self.train:
            epochs, offsets = np.divmod(flat, self.num_items)
            items = np.empty_like(flat)
            for epoch in np.unique(epochs):
                sel = epochs == epoch
                items[sel] = self._permutation(int(epoch))[offsets[sel]]
            return self._make_rows(items, step, rows)
        if step >= self.num_eval_batches:
            raise ValueError(f"eval step={step} >= num_eval_batches={self.num_eval_batches}")
        valid = flat < self.num_items
        batch = self._make_rows(np.minimum(flat, self.num_items - 1), step, rows)
        for key, value in batch.items():
            value[~valid] = 0  # padding rows: all-zero tokens, weights, segment ids, labels
            batch[key] = value
        return batch

    def iterate(self, start_step: int = 0, prefetch: int = 2) -> Iterator[Batch]:
        """Train batches from `start_step` on, forever, built `prefetch` ahead in a thread."""
        if not self.train:
            raise ValueError("iterate() is for train sources; use iterate_eval()")
        return _prefetch(self.get_batch, range(start_step, 2**62), prefetch)

    def iterate_eval(self, prefetch: int = 2) -> Iterator[Batch]:
        """The eval batches, once, in a fixed order (the last one padded with weight 0)."""
        if self.train:
            raise ValueError("iterate_eval() is for eval sources; use iterate()")
        return _prefetch(self.get_batch, range(self.num_eval_batches), prefetch)

    def target_counts(self, vocab_size: int) -> np.ndarray:
        """Counts [V] of the split's loss-target tokens (all of them, not a sample)."""
        if self._target_counts is None:
            raise ValueError("this BatchSource was built without target_counts")
        return self._target_counts(vocab_size)


def _prefetch(fn: Callable[[int], Batch], steps: Sequence[int], size: int) -> Iterator[Batch]:
    """Yields fn(step) for `steps`, computed by a daemon thread at most `size` ahead."""
    q: queue.Queue = queue.Queue(maxsize=max(1, size))
    stop = threading.Event()
    done = object()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def work() -> None:
        try:
            for step in steps:
                if not put(fn(step)):
                    return
            put(done)
        except BaseException as e:  # noqa: BLE001 - re-raised in the consumer
            put(e)

    thread = threading.Thread(target=work, daemon=True, name="batch-prefetch")
    thread.start()

    def generate() -> Iterator[Batch]:
        try:
            while True:
                item = q.get()
                if item is done:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            stop.set()
            thread.join(timeout=5)

    return generate()


def unigram_entropy(train: BatchSource, eval_source: BatchSource, vocab_size: int) -> float:
    """Cross-entropy (nats/token) on the eval split of a unigram model fit on the train split.

    Counts all train loss targets (add-one smoothed over `vocab_size`); evaluates the eval
    batches' `targets` weighted by their `weights`, exactly as a model's eval loss would be.
    """
    counts = train.target_counts(vocab_size).astype(np.float64) + 1.0
    log_p = np.log(counts) - np.log(counts.sum())  # [V]
    total, weight = 0.0, 0.0
    for batch in eval_source.iterate_eval():
        w = batch["weights"].astype(np.float64)
        total -= float((log_p[batch["targets"]] * w).sum())
        weight += float(w.sum())
    if weight == 0:
        raise ValueError("the eval batches have no weighted targets")
    return total / weight


def counts_of(tokens: np.ndarray, keep: np.ndarray, vocab_size: int) -> np.ndarray:
    """np.bincount of `tokens[keep]` with `vocab_size` bins."""
    return np.bincount(np.asarray(tokens)[keep].ravel(), minlength=vocab_size)[:vocab_size]


def take_rows(arrays: Mapping[str, np.ndarray], items: np.ndarray) -> dict[str, np.ndarray]:
    """Rows `items` of every array (copied out of memory maps)."""
    return {k: np.asarray(v[items]) for k, v in arrays.items()}
