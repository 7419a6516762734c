"""Atomic writes and all-or-nothing outputs: permissions follow the umask, a failed run leaves
the targets byte for byte as they were, ``--overwrite`` never deletes what s5jax did not write."""

import errno
import os
import stat

import ml_collections
import numpy as np
import pytest

from s5jax import atomic, modeldir
from s5jax.atomic import Staging, write_atomic
from s5jax.audio import wav


def snapshot(root):
    """``{relative path: bytes or 'dir'}`` of everything under ``root`` (hidden files too)."""
    out = {}
    for dirpath, dirs, files in os.walk(root):
        for d in dirs:
            out[os.path.relpath(os.path.join(dirpath, d), root)] = "dir"
        for f in files:
            p = os.path.join(dirpath, f)
            out[os.path.relpath(p, root)] = open(p, "rb").read()
    return out


def modes(root):
    """Permission bits of every file and folder under ``root`` (root excluded)."""
    out = {}
    for dirpath, dirs, files in os.walk(root):
        for n in dirs + files:
            p = os.path.join(dirpath, n)
            out[os.path.relpath(p, root)] = stat.S_IMODE(os.stat(p).st_mode)
    return out


@pytest.fixture
def umask():
    old = os.umask(0o022)
    yield lambda m: os.umask(m)
    os.umask(old)


@pytest.mark.parametrize("mask", [0o022, 0o007])
def test_written_files_respect_the_umask(tmp_path, umask, mask):
    umask(mask)
    assert atomic.umask() == mask
    write_atomic(tmp_path / "a.json", "{}")
    wav.write(tmp_path / "a.wav", np.zeros((1, 100), np.float32))
    cfg = ml_collections.ConfigDict({"name": "x"})
    modeldir.save_model(tmp_path / "model", cfg, {"params": {"w": np.ones(3, np.float32)}})
    with Staging() as st:
        d = st.stage(tmp_path / "out" / "deeper")
        write_atomic(d / "r.txt", "x")
        st.commit()
    found = modes(tmp_path)
    assert found["a.json"] == found["a.wav"] == 0o666 & ~mask
    assert found["model"] == found["out"] == found["out/deeper"] == 0o777 & ~mask
    assert found["out/deeper/r.txt"] == 0o666 & ~mask
    for rel, m in found.items():
        is_dir = os.path.isdir(tmp_path / rel)
        assert m == (0o777 if is_dir else 0o666) & ~mask, (rel, oct(m))


def test_staging_new_target_appears_at_commit_only(tmp_path):
    with Staging() as st:
        d = st.stage(tmp_path / "a" / "out")
        write_atomic(d / "x.txt", "1")
        assert not (tmp_path / "a" / "out").exists()
        st.commit()
    assert (tmp_path / "a" / "out" / "x.txt").read_text() == "1"
    assert snapshot(tmp_path) == {"a": "dir", "a/out": "dir", "a/out/x.txt": b"1"}


def test_staging_failure_leaves_nothing(tmp_path):
    (tmp_path / "keep").mkdir()
    (tmp_path / "keep" / "mine.txt").write_text("mine")
    before = snapshot(tmp_path)
    with pytest.raises(ValueError, match="boom"), Staging() as st:
        write_atomic(st.stage(tmp_path / "new" / "deep" / "out") / "a.txt", "a")
        write_atomic(st.stage(tmp_path / "keep") / "b.txt", "b")
        raise ValueError("boom")
    assert snapshot(tmp_path) == before  # created parents removed as well
    # Leaving the block without a commit also discards.
    with Staging() as st:
        write_atomic(st.stage(tmp_path / "keep") / "c.txt", "c")
    assert snapshot(tmp_path) == before


def test_staging_merge_keeps_other_files_and_needs_overwrite(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "theirs.txt").write_text("theirs")
    (out / "a.txt").write_text("old")
    with pytest.raises(ValueError, match="a.txt: already exists \\(pass --overwrite\\)"), \
            Staging() as st:
        d = st.stage(out)
        write_atomic(d / "a.txt", "new")
        write_atomic(d / "b.txt", "new")
        st.commit()
    assert snapshot(out) == {"theirs.txt": b"theirs", "a.txt": b"old"}
    with Staging() as st:
        d = st.stage(out, overwrite=True)
        write_atomic(d / "a.txt", "new")
        (d / "sub").mkdir()
        write_atomic(d / "sub" / "c.txt", "c")
        st.commit()
    assert snapshot(out) == {"theirs.txt": b"theirs", "a.txt": b"new", "sub": "dir",
                             "sub/c.txt": b"c"}


def test_staging_commit_failure_is_undone(tmp_path, monkeypatch):
    out, other = tmp_path / "out", tmp_path / "other"
    out.mkdir()
    (out / "a.txt").write_text("old a")
    (out / "z.txt").write_text("old z")
    before = snapshot(tmp_path)
    real = os.rename
    calls = []

    def flaky(a, b):
        calls.append(b)
        if len(calls) == 4:  # fail in the middle of the moves
            raise OSError(errno.EIO, "Input/output error", str(b))
        return real(a, b)

    with pytest.raises(ValueError, match="nothing was written"), Staging() as st:
        d = st.stage(out, overwrite=True)
        for n in ("a.txt", "b.txt", "z.txt"):
            write_atomic(d / n, "new " + n)
        write_atomic(st.stage(other) / "o.txt", "o")
        monkeypatch.setattr(os, "rename", flaky)
        st.commit()
    monkeypatch.undo()
    assert len(calls) > 4  # the failing move, then the undoing ones
    assert snapshot(tmp_path) == before


def test_staging_replace_only_what_it_recognises(tmp_path):
    target = tmp_path / "thesis"
    target.mkdir()
    (target / "chapter1.tex").write_text("precious")
    before = snapshot(tmp_path)
    with pytest.raises(ValueError, match="not empty \\(pass --overwrite\\)"), Staging() as st:
        st.stage(target, replace=lambda p: None)
    with pytest.raises(ValueError, match="thesis: not mine; refusing to replace it"), \
            Staging() as st:
        st.stage(target, overwrite=True, replace=lambda p: "not mine")
    assert snapshot(tmp_path) == before
    with Staging() as st:
        write_atomic(st.stage(target, overwrite=True, replace=lambda p: None) / "n.txt", "n")
        st.commit()
    assert snapshot(target) == {"n.txt": b"n"}


def test_staging_refuses_a_file_in_the_way(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(ValueError, match="cannot create a folder there .*f is a file"):
        Staging().stage(tmp_path / "f" / "out")
    with pytest.raises(ValueError, match="exists and is not a folder"):
        Staging().stage(tmp_path / "f")


def test_full_disk_during_a_wav_write_is_one_clear_error(tmp_path, monkeypatch):
    """A full disk (simulated: ENOSPC from the write) names the file and the reason, and the
    staged run leaves nothing behind."""
    from pathlib import Path

    real = Path.write_bytes

    def full(self, data):
        if self.name.startswith(".b.wav"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self))
        return real(self, data)

    monkeypatch.setattr(Path, "write_bytes", full)
    with pytest.raises(ValueError) as e, Staging() as st:
        d = st.stage(tmp_path / "out")
        wav.write(d / "a.wav", np.zeros(100, np.float32))
        wav.write(d / "b.wav", np.zeros(100, np.float32))
    msg = str(e.value)
    assert msg == f"{tmp_path / 'out' / 'b.wav'}: write failed (No space left on device)"
    assert snapshot(tmp_path) == {}


def test_save_model_overwrite_replaces_only_a_model_directory(tmp_path):
    cfg = ml_collections.ConfigDict({"name": "x"})
    variables = {"params": {"w": np.ones(3, np.float32)}}
    home = tmp_path / "thesis"
    home.mkdir()
    (home / "notes.txt").write_text("mine")
    before = snapshot(tmp_path)
    with pytest.raises(ValueError, match="already exists \\(pass --overwrite\\)"):
        modeldir.save_model(home, cfg, variables)
    with pytest.raises(ValueError, match="not an s5jax model directory.*only replaces a model"):
        modeldir.save_model(home, cfg, variables, overwrite=True)
    assert snapshot(tmp_path) == before
    model = modeldir.save_model(tmp_path / "m", cfg, variables)
    (model / "extra.txt").write_text("mine too")
    with pytest.raises(ValueError, match="not part of an s5jax model directory \\(extra.txt\\)"):
        modeldir.save_model(model, cfg, variables, overwrite=True)
    (model / "extra.txt").unlink()
    variables["params"]["w"] = np.full(3, 2.0, np.float32)
    modeldir.save_model(model, cfg, variables, overwrite=True)
    np.testing.assert_array_equal(modeldir.load_model(model)[1]["params"]["w"], 2.0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m", "thesis"]
