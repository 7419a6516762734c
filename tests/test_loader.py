"""Grain loader on the small embedded dataset: P14 parity on validation metadata, modes, state."""

import json
import multiprocessing
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from s5jax import labels as labels_lib
from s5jax.audio import wav
from s5jax.data import catalog, loader, recipes, synth

CLIP = 1.0


@pytest.fixture(scope="module")
def root(embedded_small):
    return embedded_small


@pytest.fixture(scope="module")
def cat(root):
    return catalog.scan(root)


def _rel(a, b):
    return np.abs(np.asarray(a) - b).max() / max(np.abs(b).max(), 1e-30)


def test_valid_parity_with_reference(cat):
    """P14: jitted float32 rendering of the validation metadata vs the float64 reference."""
    vb = loader.make_valid_batches(cat, batch_size=4)
    entries = recipes.read_valid_metadata(cat.valid_metadata)
    split = cat.splits["valid"]
    layout = loader.split_layout(split, vb.config)
    n, worst = 0, 0.0
    for batch in vb:
        out = loader.render_batch(batch, vb.config)
        for b in range(len(batch["weight"])):
            if batch["weight"][b] == 0:
                assert np.all(np.asarray(out["mixture"][b]) == 0)
                assert np.all(np.asarray(out["labels"][b]) == -1)
                continue
            e = entries[n]
            n += 1
            r = recipes.recipe_from_metadata(e, split, vb.config)
            item = loader.read_item(r, split, vb.config, layout, dtype=np.float64)
            mix, dry = synth.render_reference(item, length=vb.config.frames)
            worst = max(worst, _rel(out["mixture"][b], mix), _rel(out["dry"][b], dry))
            names = [labels_lib.CLASSES[c] if c >= 0 else "silence" for c in out["labels"][b]]
            assert names == list(e.ref_event)
            for s, name in enumerate(names):
                if name == "silence":
                    assert np.all(np.asarray(out["dry"][b, s]) == 0)
    assert n == len(entries) == len(vb.names)
    assert worst <= 1e-5, worst


def test_test_split_written(root, cat):
    sc = sorted((root / "test" / "soundscape").glob("*.wav"))
    assert len(sc) == 6
    x = wav.read(sc[0])
    assert x.shape == (4, 4 * 32000)
    refs = sorted((root / "test" / "oracle_target").glob(f"{sc[0].stem}_*.wav"))
    assert 1 <= len(refs) <= 3
    for r in refs:
        assert r.stem.split("_")[-1] in labels_lib.CLASSES
        assert wav.read(r).shape == (1, 4 * 32000)


@pytest.mark.parametrize("mode", ["separator", "tagger"])
def test_train_batches(cat, mode):
    it = loader.make_train_iterator(cat, batch_size=3, seed=0, clip_seconds=CLIP, mode=mode)
    batch = next(it)
    cfg = recipes.MixtureConfig(duration=CLIP)
    out = loader.render_batch(loader.to_device(batch), cfg, mode=mode)
    assert out["mixture"].shape == (3, 4, 32000)
    assert ("dry" in out) == (mode == "separator")
    if mode == "tagger":
        np.testing.assert_array_equal(
            out["multi_hot"], np.asarray(labels_lib.multi_hot(batch["labels"])))
    # Item i of the stream is recipe i: rebuild item 1 by hand.
    r = recipes.make_recipe(cat.splits["train"], 1, 0, cfg)
    item = loader.read_item(r, cat.splits["train"], cfg, loader.split_layout(cat.splits["train"],
                                                                             cfg))
    for k in synth.INPUT_KEYS:
        np.testing.assert_array_equal(batch[k][1], item[k])
    # Mixtures at the baseline's levels: RMS around 0.02 or below, never silent.
    rms = np.sqrt(np.mean(np.asarray(out["mixture"]) ** 2, axis=(1, 2)))
    assert np.all(rms > 1e-4) and np.all(rms < 0.2)


_CHILD = textwrap.dedent("""
    import json, sys, numpy as np
    from s5jax.data import catalog, loader
    cat = catalog.scan(sys.argv[1])
    it = loader.make_train_iterator(cat, batch_size=2, seed=5, clip_seconds=1.0,
                                    num_workers=int(sys.argv[3]))
    it.set_state(json.loads(sys.argv[2]))
    b = next(it)
    np.savez(sys.argv[4], **b)
""")


def test_state_restore_in_fresh_process(cat, root, tmp_path):
    it = loader.make_train_iterator(cat, batch_size=2, seed=5, clip_seconds=CLIP)
    for _ in range(3):
        next(it)
    state = it.get_state()
    want = next(it)
    out = tmp_path / "b.npz"
    subprocess.run([sys.executable, "-c", _CHILD, str(root), json.dumps(state), "0", str(out)],
                   check=True)
    got = np.load(out)
    for k in want:
        np.testing.assert_array_equal(got[k], want[k])


def test_workers_same_stream_and_state(cat, root, tmp_path):
    """Two worker processes give the same batches as none; their state restores too."""
    ref = loader.make_train_iterator(cat, batch_size=2, seed=5, clip_seconds=CLIP)
    ref_batches = [next(ref) for _ in range(4)]
    others = set(multiprocessing.active_children())  # of other tests in this process, if any
    it = loader.make_train_iterator(cat, batch_size=2, seed=5, clip_seconds=CLIP, num_workers=2)
    for k in range(3):
        b = next(it)
        for key in b:
            np.testing.assert_array_equal(b[key], ref_batches[k][key])
    # A terminal's Ctrl-C and a scheduler's SIGTERM reach the workers too: they leave the
    # stopping to the main process, which closes them (a worker killed while it fills a
    # shared-memory batch leaves the block behind).
    workers = [p for p in multiprocessing.active_children() if p not in others]
    assert len(workers) == 2
    for p in workers if Path("/proc/self/status").exists() else ():  # Linux
        ignored = _ignored_signals(p.pid)
        assert {signal.SIGINT, signal.SIGTERM} <= ignored, (p.pid, ignored)
    state = it.get_state()
    out = tmp_path / "b.npz"
    subprocess.run([sys.executable, "-c", _CHILD, str(root), json.dumps(state), "2", str(out)],
                   check=True)
    got = np.load(out)
    for key in ref_batches[3]:
        np.testing.assert_array_equal(got[key], ref_batches[3][key])


def _ignored_signals(pid: int) -> set[int]:
    """The signals process ``pid`` ignores (Linux ``/proc/PID/status``, ``SigIgn`` bit mask)."""
    line = next(x for x in Path(f"/proc/{pid}/status").read_text().splitlines()
                if x.startswith("SigIgn:"))
    mask = int(line.split()[1], 16)
    return {sig for sig in range(1, 65) if mask >> (sig - 1) & 1}


_ORPHAN_CHILD = textwrap.dedent("""
    import multiprocessing, sys, time
    from s5jax.data import catalog, loader
    if __name__ == "__main__":
        it = loader.make_train_iterator(catalog.scan(sys.argv[1]), batch_size=2, seed=5,
                                        clip_seconds=1.0, num_workers=1)
        next(it)
        print(*[p.pid for p in multiprocessing.active_children()], flush=True)
        time.sleep(600)
""")


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"  # an exited child that its new parent has not reaped yet


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc (Linux)")
def test_a_worker_exits_when_its_main_process_is_killed(root, tmp_path):
    """``kill -9`` (or the out-of-memory killer) ends the main process without closing the
    loader's workers: they exit by themselves instead of running on, with their memory."""
    child = tmp_path / "child.py"
    child.write_text(_ORPHAN_CHILD)
    proc = subprocess.Popen([sys.executable, str(child), str(root)], stdout=subprocess.PIPE,
                            text=True)
    workers: list[int] = []
    try:
        workers += [int(x) for x in proc.stdout.readline().split()]
        assert len(workers) == 1 and _running(workers[0])
        proc.kill()
        proc.wait()
        deadline = time.monotonic() + 30
        while any(map(_running, workers)) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not any(map(_running, workers)), "the worker outlived its main process"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for pid in workers:
            if _running(pid):  # the failure above: leave no orphan behind
                os.kill(pid, signal.SIGKILL)


_CLOSE_CHILD = textwrap.dedent("""
    import sys, time
    import jax
    from s5jax.data import catalog, loader
    if __name__ == "__main__":  # the workers are spawned: they import this module again
        cat = catalog.scan(sys.argv[1])
        it = loader.DevicePrefetch(loader.make_train_iterator(
            cat, batch_size=2, seed=5, clip_seconds=1.0, num_workers=2))
        kept = [jax.block_until_ready(next(it)) for _ in range(3)]  # alive at exit, as in a run
        time.sleep(0.5)  # the prefetch queue and the workers' buffers fill up
        it.close()
""")


def test_device_prefetch_close_releases_shared_memory(root, tmp_path):
    """With loader workers the batches travel in shared memory: a run that closes its iterator
    leaves none behind, so Python's resource tracker has no "leaked shared_memory objects" to
    warn about at exit (it did for every training run with workers)."""
    child = tmp_path / "child.py"
    child.write_text(_CLOSE_CHILD)
    done = subprocess.run([sys.executable, str(child), str(root)], capture_output=True,
                          text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "leaked shared_memory" not in done.stderr, done.stderr[-3000:]


def test_device_prefetch_state(cat):
    it = loader.make_train_iterator(cat, batch_size=2, seed=5, clip_seconds=CLIP)
    ref = loader.make_train_iterator(cat, batch_size=2, seed=5, clip_seconds=CLIP)
    ref_batches = [next(ref) for _ in range(4)]
    pf = loader.DevicePrefetch(it, size=2)
    next(pf)
    next(pf)
    state = pf.get_state()  # the worker has prefetched further; the state must not run ahead
    pf.set_state(state)
    b = next(pf)
    np.testing.assert_array_equal(np.asarray(b["source"]), ref_batches[2]["source"])
    pf.close()


def test_bad_mode(cat):
    with pytest.raises(ValueError, match="mode"):
        loader.make_train_iterator(cat, batch_size=2, seed=0, mode="nope")
