"""Grain input pipelines: per-index recipes → windowed host reads → fixed-size batches → device.

Training (``make_train_iterator``): item ``i`` of host ``p`` (of ``P``) is recipe
``i·P + p`` of the split for the seed, and batch ``k`` holds items ``[kB, (k+1)B)``, so a run is
reproducible whatever the worker and thread counts, and
Grain's iterator state (``get_state()`` / ``set_state()``) is all a checkpoint needs. Only the
source windows the recipe uses are read (``wav.read`` with ``start``/``frames``) and only one IR
per event (``sofa.read_ir``). Arrays are padded to shapes fixed by the catalog (mixture length,
max RIR length over the split's rooms), so the jitted renderer compiles once.

Files at another sample rate are read with ``wav.load``: only the window a mixture uses is read
and resampled, which is exactly what the baseline's ``librosa.load(offset=, duration=, sr=)``
does (so the samples match it), costs ~10–20 ms per 10-s window and needs no cache shared
between Grain workers. Rooms at another rate are resampled one measurement at a time.

Validation (``make_valid_batches``): mixtures described by ``metadata/valid.json`` (2025: slots
in ``ref_event`` order; 2026 SpAudSyn metadata: ``fg_events`` sorted by ``event_time``, see
:mod:`s5jax.data.spaudsyn`), deterministic; the last batch is padded with empty items
(``weight`` 0).

Modes: ``"separator"`` (dry targets rendered), ``"tagger"`` (no dry targets; host batch adds
``multi_hot (B, 18)``). ``render_batch`` turns a (device) batch into
``{"mixture" (B, R, L), "dry" (B, S, L), "labels" (B, S)}`` with :func:`s5jax.data.synth.render`.
"""

from __future__ import annotations

import dataclasses
import gc
import os
import queue
import signal
import threading
import time
from collections.abc import Iterator
from typing import Any

import grain
import jax
import numpy as np
from absl import flags
from jax.sharding import Mesh

from s5jax import labels as labels_lib
from s5jax.audio import wav
from s5jax.data import recipes as recipes_lib
from s5jax.data import sofa, spaudsyn, synth
from s5jax.data.catalog import Catalog, Split
from s5jax.data.recipes import MixtureConfig, Recipe
from s5jax.mesh import per_device, put_batch

MODES = ("separator", "tagger")
_MAX_INDEX = 2**62  # "infinite" training stream


@dataclasses.dataclass(frozen=True)
class Layout:
    """Static array sizes of one item."""

    length: int  # mixture samples L (= source window size)
    channels: int  # R
    ir_frames: int  # N (max over the split's rooms)


def split_layout(split: Split, cfg: MixtureConfig) -> Layout:
    """Fixed item sizes for a split: all rooms must share one channel count."""
    if not split.rooms:
        raise ValueError("split has no rooms; cannot build mixtures")
    chans = {r.channels for r in split.rooms}
    if len(chans) != 1:
        raise ValueError(f"rooms of one split must share a channel count, found {sorted(chans)}")
    return Layout(cfg.frames, chans.pop(), max(r.ir_frames for r in split.rooms))


def _clip(split: Split, recipe: Recipe, slot: int, num_targets: int):
    c = int(recipe.cls[slot])
    if slot < num_targets:
        return split.targets[labels_lib.CLASSES[c]][int(recipe.file[slot])]
    return split.interference[recipes_lib.interference_classes(split)[c]][int(recipe.file[slot])]


def read_item(
    recipe: Recipe,
    split: Split,
    cfg: MixtureConfig,
    layout: Layout,
    dtype: Any = np.float32,
    mode: str = "separator",
) -> dict[str, np.ndarray]:
    """Host arrays of one mixture (keys and shapes: :mod:`s5jax.data.synth`)."""
    e_n, s_n, lay = cfg.num_events, cfg.num_targets, layout
    item = dict(
        source=np.zeros((e_n, lay.length), dtype),
        source_len=np.zeros(e_n, np.int32),
        ir=np.zeros((e_n, lay.channels, lay.ir_frames), dtype),
        ir_len=np.zeros(e_n, np.int32),
        onset=np.zeros(e_n, np.int32),
        level_db=(cfg.ref_db + recipe.snr).astype(dtype),
        active=recipe.active.copy(),
        noise=np.zeros((lay.channels, lay.length), dtype),
        noise_active=np.asarray(int(recipe.noise) >= 0),
        noise_db=np.asarray(cfg.ref_db + recipe.noise_snr, dtype),
        labels=recipe.target_labels(s_n),
    )
    for e in range(e_n):
        if not recipe.active[e]:
            continue
        room = split.rooms[int(recipe.room)]
        clip = _clip(split, recipe, e, s_n)
        # The baseline: librosa.load(offset=source_time, duration=, mono=True, sr=32000), then
        # x[: int(duration · sr)].
        duration = float(recipe.duration[e])
        x = wav.load(clip.path, sample_rate=cfg.sr, offset=float(recipe.source_time[e]),
                     duration=duration, mono=True)[0, : int(duration * cfg.sr)]
        frames = x.shape[0]
        onset = int(recipe.onset[e] * cfg.sr)
        if frames <= 0 or onset + frames > lay.length:
            raise ValueError(
                f"{clip.path}: event window ({recipe.source_time[e]:g} s + {frames} samples at "
                f"onset {onset}) does not fit a {lay.length}-sample mixture"
            )
        item["source"][e, :frames] = x
        item["source_len"][e] = frames
        item["onset"][e] = onset
        h = sofa.read_ir(room.path, int(recipe.position[e]), sample_rate=cfg.sr)
        if h.shape[0] != lay.channels or h.shape[1] > lay.ir_frames:
            raise ValueError(f"{room.path}: IR shape {h.shape}, expected ({lay.channels}, ≤N)")
        item["ir"][e, :, : h.shape[1]] = h
        item["ir_len"][e] = h.shape[1]
    if int(recipe.noise) >= 0:
        item["noise"][:] = read_noise(split.noise[int(recipe.noise)],
                                      float(recipe.noise_offset), cfg, lay)
    if mode == "tagger":
        item["multi_hot"] = np.asarray(labels_lib.multi_hot(item["labels"][None]))[0]
    return item


def read_noise(clip, offset: float, cfg: MixtureConfig, layout: Layout) -> np.ndarray:
    """The background window ``(R, L)`` float32, as the baselines' renderers read it.

    ``offset`` in seconds: ``librosa.load(offset=, duration=clip length)``. ``STRETCH``
    ("source_time": null, files no longer than the clip): the whole file brought to ``⌈L /
    len⌉`` times its length and cut to ``L``: 2025 (``get_background_noise``) repeats each
    sample — a time-stretch, not a loop (spec §7.5); 2026 (SpAudSyn) loops the file
    (``np.tile``).
    """
    length = layout.length
    if offset == recipes_lib.STRETCH:
        n = wav.load(clip.path, sample_rate=cfg.sr, channels=layout.channels)
        reps = -(-length // n.shape[1])
        if synth.rules(cfg.task).short_noise == "tile":
            return np.tile(n, (1, reps))[:, :length]
        return np.repeat(n, reps, axis=-1)[:, :length]
    n = wav.load(clip.path, sample_rate=cfg.sr, offset=offset, duration=cfg.duration,
                 channels=layout.channels)[:, :length]
    # Shorter only by resampling round-off (a file too short for its offset is refused when
    # validation metadata is resolved, and training recipes never ask for one).
    if n.shape[1] == length:
        return n
    return np.pad(n, ((0, 0), (0, length - n.shape[1])))


def empty_item(cfg: MixtureConfig, layout: Layout, mode: str = "separator") -> dict:
    """An all-inactive item (pads the last validation batch; renders to zeros)."""
    return read_item(recipes_lib.empty_recipe(cfg), _NO_SPLIT, cfg, layout, mode=mode)


_NO_SPLIT = Split(targets={}, interference={}, noise=(), rooms=())


class _RandomItem:
    """index → host item (picklable for Grain worker processes)."""

    def __init__(self, split, cfg, layout, seed, mode, process_index, process_count):
        self.split, self.cfg, self.layout, self.seed, self.mode = split, cfg, layout, seed, mode
        self.pi, self.pc = process_index, process_count

    def __call__(self, i: int) -> dict:
        index = int(i) * self.pc + self.pi
        recipe = recipes_lib.make_recipe(self.split, index, self.seed, self.cfg)
        return read_item(recipe, self.split, self.cfg, self.layout, mode=self.mode)


def _check_mode(mode: str) -> None:
    if mode not in MODES:
        raise ValueError(f"mode {mode!r}: expected one of {MODES}")


def _ensure_absl_flags() -> None:
    # Grain reads absl flags (also in its worker processes); a host program that never ran
    # absl.app (pytest, notebooks) would raise UnparsedFlagAccessError.
    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()


def make_train_iterator(
    catalog: Catalog,
    *,
    batch_size: int,
    seed: int,
    clip_seconds: float = 10.0,
    mode: str = "separator",
    num_workers: int = 0,
    split: str = "train",
    config: MixtureConfig | None = None,
    read_threads: int = 2,
    worker_buffer_size: int = 2,
    process_index: int | None = None,
    process_count: int | None = None,
) -> grain.DatasetIterator:
    """Infinite iterator of host batches (dicts of numpy arrays with leading axis ``batch_size``).

    ``batch_size`` is the per-host batch. The returned Grain iterator supports ``get_state()``
    and ``set_state()``.
    """
    _check_mode(mode)
    if batch_size < 1:
        raise ValueError(f"batch_size {batch_size}: expected ≥ 1")
    if split not in catalog.splits:
        raise ValueError(f"split {split!r} not in catalog {catalog.root} ({list(catalog.splits)})")
    cfg = config or MixtureConfig(duration=float(clip_seconds))
    sp = catalog.splits[split]
    layout = split_layout(sp, cfg)
    pi = jax.process_index() if process_index is None else process_index
    pc = jax.process_count() if process_count is None else process_count
    _ensure_absl_flags()
    # Batches are formed before the iterator so that batch k holds items [kB, (k+1)B) whatever
    # the worker count (workers take whole batches); threads read batches in parallel.
    ds = (
        grain.MapDataset.range(0, _MAX_INDEX)
        .map(_RandomItem(sp, cfg, layout, seed, mode, pi, pc))
        .batch(batch_size, drop_remainder=True)
    )
    it = ds.to_iter_dataset(
        grain.ReadOptions(num_threads=read_threads, prefetch_buffer_size=read_threads)
    )
    if num_workers > 0:
        it = it.mp_prefetch(
            grain.MultiprocessingOptions(
                num_workers=num_workers, per_worker_buffer_size=worker_buffer_size
            ),
            worker_init_fn=_leave_stopping_to_main,
        )
    return iter(it)


def _leave_stopping_to_main(worker_index: int, worker_count: int) -> None:
    """Grain worker start-up: Ctrl-C in a terminal, and a scheduler's SIGTERM (Slurm, ``kill
    -- -PGID``), signal the whole process group. The main process stops the run and then closes
    its workers, which unlink their shared-memory batches on the way out; a worker killed by the
    signal could leave the block it was filling in ``/dev/shm``, and one interrupted by Ctrl-C
    printed a KeyboardInterrupt traceback over the message that says how to resume. SIGKILL
    still ends a worker at once (and Grain's close uses it after 25 s).

    A main process that cannot close its workers (``kill -9``, the kernel's out-of-memory
    killer, a multi-host run's default SIGTERM) would leave them running, with their memory,
    blocked on a queue nobody reads: each worker exits when it finds itself orphaned."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    threading.Thread(target=_exit_when_orphaned, args=(os.getppid(),), daemon=True,
                     name="s5jax-orphan-watch").start()


def _exit_when_orphaned(parent: int, every: float = 0.5) -> None:
    """Exit this process once its parent is gone (it is then re-parented: ``getppid`` changes).
    Python's resource tracker, shared with the parent, removes the shared-memory blocks left."""
    while os.getppid() == parent:
        time.sleep(every)
    os._exit(1)


def release_worker_batches(timeout: float = 10.0) -> None:
    """Unlink now the shared memory of the loader workers' batches that are no longer used.

    Grain unlinks a dropped batch's blocks on a background thread (``SharedMemoryArray``'s
    asynchronous deletion); a process that exits with unlinks still queued, as a loaded machine
    makes likely, leaves those blocks to Python's resource tracker, which warns of "leaked
    shared_memory objects". A failed step's traceback also holds batches in reference cycles,
    which only a collection frees. So: collect, then wait (at most ``timeout`` seconds) until
    the deletions queued before are done (Grain's deletion pool runs one thread, in order).
    """
    gc.collect()
    pool = getattr(grain.multiprocessing.SharedMemoryArray, "_del_thread_pool", None)
    if pool is not None:
        try:
            pool.apply_async(int).wait(timeout)
        except ValueError:  # the pool was closed: nothing is queued
            pass


class _ValidItem:
    def __init__(self, recipes, split, cfg, layout, mode):
        self.recipes, self.split, self.cfg, self.layout, self.mode = (
            recipes, split, cfg, layout, mode)

    def __call__(self, i: int) -> dict:
        if i >= len(self.recipes):
            item = empty_item(self.cfg, self.layout, self.mode)
            item["weight"] = np.float32(0)
            return item
        item = read_item(self.recipes[i], self.split, self.cfg, self.layout, mode=self.mode)
        item["weight"] = np.float32(1)
        return item


@dataclasses.dataclass
class ValidBatches:
    """Re-iterable validation batches; ``config`` describes the mixtures (length, ref_db, …)."""

    dataset: grain.MapDataset
    config: MixtureConfig
    names: tuple[str, ...]
    num_batches: int

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        opts = grain.ReadOptions(num_threads=2, prefetch_buffer_size=2)
        return iter(self.dataset.to_iter_dataset(opts))

    def __len__(self) -> int:
        return self.num_batches


def make_valid_batches(
    catalog: Catalog, *, batch_size: int, mode: str = "separator", num_targets: int = 3
) -> ValidBatches:
    """Deterministic validation batches from ``catalog.valid_metadata`` (2025: spec §2.7;
    2026: SpAudSyn metadata, told apart by the first mixture's ``room``).

    Every mixture must share ``sr`` and ``duration``. All metadata is resolved here, so every
    problem is reported at once (one ``ValueError``) before anything runs. Items carry
    ``weight`` (1 real, 0 padding). The returned ``config`` is the metadata's (its ``task``
    says whose renderer the mixtures follow).
    """
    _check_mode(mode)
    if catalog.valid_metadata is None:
        raise ValueError(f"{catalog.root}: no metadata/valid.json; cannot build validation batches")
    split_name = recipes_lib.metadata_split(catalog.valid_metadata)
    if split_name not in catalog.splits:
        split_name = "valid"
    if split_name not in catalog.splits:
        raise ValueError(f"{catalog.root}: validation metadata needs split {split_name!r} scanned")
    sp = catalog.splits[split_name]
    resolve = (spaudsyn.resolve_valid if spaudsyn.is_spaudsyn_listing(catalog.valid_metadata)
               else recipes_lib.resolve_valid)
    cfg, entries, recipes = resolve(catalog.valid_metadata, sp, num_targets)
    layout = split_layout(sp, cfg)
    _ensure_absl_flags()
    n = len(entries)
    padded = -(-n // batch_size) * batch_size
    ds = grain.MapDataset.range(0, padded).map(_ValidItem(recipes, sp, cfg, layout, mode))
    ds = ds.batch(batch_size, drop_remainder=True)
    return ValidBatches(ds, cfg, tuple(e.name for e in entries), padded // batch_size)


# ----------------------------------------------------------------------------------------------
# Device side


def to_device(batch: dict[str, np.ndarray], mesh: Mesh | None = None) -> dict[str, jax.Array]:
    """Host batch → device arrays, sharded over the mesh axis ``data`` if a mesh is given.

    With several processes each passes its local slice; the global batch is their concatenation.
    """
    if mesh is None:
        return jax.device_put(batch)
    return put_batch(batch, mesh)


def owned(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """``batch`` with its loader workers' shared-memory arrays copied, on the CPU backend.

    Batches from loader workers arrive as shared-memory arrays (an ndarray subclass), released
    when the last array viewing them goes. The CPU backend's device arrays alias host memory:
    copied first, the blocks are released now instead of with the device batch (or, for the
    batches still referenced at exit, by Python's resource tracker with a "leaked shared_memory
    objects" warning). Plain arrays (no workers) are not copied; elsewhere ``device_put``
    copies anyway.
    """
    if jax.default_backend() != "cpu":
        return batch
    return {k: v if type(v) is np.ndarray else np.array(v) for k, v in batch.items()}


def render_batch(
    batch: dict, config: MixtureConfig, *, mode: str = "separator", channels: int | None = None
) -> dict[str, jax.Array]:
    """Device mixtures of a (device or host) batch: ``mixture``, ``labels``, ``dry``
    (separator mode), plus passthrough ``multi_hot`` / ``weight`` if present. ``channels``:
    render only the mixture's first channels (default all; :func:`s5jax.data.synth.render`).

    Traced under a mesh (``mesh.on_mesh``, as the train and eval steps are), each device renders
    its own slice of the batch (``mesh.per_device``): a mixture depends on its own item only, and
    left to the partitioner the renderer's data-dependent gathers over the whole batch ran ~5 ×
    slower on two devices than on one (docs/benchmarks.md, "Synthesis on a dataset").
    """
    _check_mode(mode)

    def render(inputs: dict) -> dict:
        return dict(synth.render(
            inputs, length=config.frames, num_targets=config.num_targets,
            with_dry=mode == "separator", sr=config.sr,
            window_ms=config.dry_window_ms, task=config.task, channels=channels,
        ))

    # check_vma=False: the renderer's loop carries start as constants (not varying over
    # ``data``); every output is per item, so the out_specs hold by construction.
    out = per_device(render, check_vma=False)({k: batch[k] for k in synth.INPUT_KEYS})
    for k in ("multi_hot", "weight"):
        if k in batch:
            out[k] = batch[k]
    return out


class DevicePrefetch:
    """Moves host batches to devices ``size`` batches ahead, in a background thread.

    ``get_state()`` is the wrapped iterator's state right after the last batch *returned* (not
    the last one prefetched), so restoring it loses nothing.
    """

    def __init__(self, it: grain.DatasetIterator, mesh: Mesh | None = None, size: int = 2):
        self._it, self._mesh, self._size = it, mesh, size
        self._state = it.get_state()
        self._start()

    def _start(self) -> None:
        self._q: queue.Queue = queue.Queue(maxsize=self._size)
        self._stop = threading.Event()

        def work():
            while not self._stop.is_set():
                try:
                    host = owned(next(self._it))
                    item = (self._it.get_state(), to_device(host, self._mesh), None)
                except Exception as e:  # noqa: BLE001 - handed to the consumer
                    item = (None, None, e)
                while not self._stop.is_set():
                    try:
                        self._q.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if item[2] is not None:
                    return

        self._thread = threading.Thread(target=work, daemon=True)
        self._thread.start()

    def __iter__(self):
        return self

    def __next__(self) -> dict[str, jax.Array]:
        state, dev, err = self._q.get()
        if err is not None:
            raise err
        self._state = state
        return dev

    def get_state(self) -> dict:
        return self._state

    def set_state(self, state: dict) -> None:
        self._stop_thread()
        self._it.set_state(state)
        self._state = state
        self._start()

    def _stop_thread(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def close(self) -> None:
        """Stops the thread and closes the wrapped iterator: with loader workers, the batches
        they had prefetched into shared memory are released now (left open, Python's
        resource tracker warns about "leaked shared_memory objects" at exit)."""
        self._stop_thread()
        while not self._q.empty():  # the prefetched batches: their buffers go with them
            self._q.get_nowait()
        if hasattr(self._it, "close"):
            self._it.close()
