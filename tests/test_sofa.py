"""SOFA reading/writing and the image-source FOA room impulse responses."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from s5jax.audio import wav
from s5jax.data import rooms, sofa

SR = 32000


def _room(tmp_path, m=5, r=4, n=300, **kw):
    rng = np.random.default_rng(0)
    irs = rng.standard_normal((m, r, n))
    pos = rng.uniform(-3, 3, (m, 3))
    path = sofa.write_room(tmp_path / "room.sofa", irs, pos, **kw)
    return path, irs, pos


def test_roundtrip_float64(tmp_path):
    path, irs, pos = _room(tmp_path)
    info = sofa.open_room(path)
    assert (info.channels, info.ir_frames, info.sample_rate, info.measurements) == (4, 300, SR, 5)
    np.testing.assert_array_equal(info.positions, pos)
    for m in range(5):
        h = sofa.read_ir(path, m)
        assert h.dtype == np.float64 and h.shape == (4, 300)
        np.testing.assert_array_equal(h, irs[m])


def test_roundtrip_float32_storage(tmp_path):
    path, irs, _ = _room(tmp_path, dtype="float32")
    h = sofa.read_ir(path, 2)
    assert h.dtype == np.float64
    np.testing.assert_array_equal(h, irs[2].astype(np.float32).astype(np.float64))


def test_file_structure_is_netcdf4_like(tmp_path):
    path, _, _ = _room(tmp_path)
    with h5py.File(path, "r") as f:
        assert f.attrs["Conventions"] == b"SOFA"
        ir = f["Data.IR"]
        assert ir.attrs["ChannelOrdering"] == b"acn" and ir.attrs["Normalization"] == b"sn3d"
        # Dimension scales named as netCDF-4 writes dimensions without coordinate variables.
        names = [ir.dims[a][0].name for a in range(3)]
        assert names == ["/M", "/R", "/N"]
        assert f["N"].attrs["CLASS"] == b"DIMENSION_SCALE"
        assert f["SourcePosition"].dims[0][0].name == "/M"
        # One chunk per measurement, so read_ir touches one chunk.
        assert ir.chunks == (1, 4, 300)


def test_read_ir_reads_one_measurement_only(tmp_path, monkeypatch):
    path, irs, _ = _room(tmp_path, m=7)
    shapes = []
    original = h5py.Dataset.__getitem__

    def spy(self, args, **kw):
        out = original(self, args, **kw)
        if self.name == "/Data.IR":
            shapes.append(np.shape(out))
        return out

    monkeypatch.setattr(h5py.Dataset, "__getitem__", spy)
    h = sofa.read_ir(path, 3)
    np.testing.assert_array_equal(h, irs[3])
    assert shapes == [(4, 300)]  # exactly one read of Data.IR, of one measurement


def test_write_is_atomic_and_checked(tmp_path):
    with pytest.raises(ValueError, match=r"positions of shape \(2, 3\), expected \(3, 3\)"):
        sofa.write_room(tmp_path / "x.sofa", np.zeros((3, 4, 10)), np.zeros((2, 3)))
    with pytest.raises(ValueError, match="expected non-empty"):
        sofa.write_room(tmp_path / "x.sofa", np.zeros((4, 10)), np.zeros((4, 3)))
    assert list(tmp_path.iterdir()) == []  # nothing half-written


def _edit(path, fn):
    with h5py.File(path, "r+") as f:
        fn(f)


def test_other_rate_is_resampled(tmp_path):
    """A 48-kHz room is read at 32 kHz (SpatialScaper's librosa.resample of the IRs): the
    direct path of a free-field source stays at distance/c·32000 samples."""
    room = rooms.Shoebox(size=(60.0, 60.0, 60.0), reflection=0.01, mic=(30.0, 30.0, 30.0))
    rel = np.array([1.3, -0.7, 0.4])
    h48 = rooms.foa_rir(room, np.asarray(room.mic) + rel, 2400, sample_rate=48000)[None]
    path = sofa.write_room(tmp_path / "r48.sofa", h48, rel[None], sample_rate=48000)
    info = sofa.open_room(path)
    assert (info.sample_rate, info.ir_frames, info.frames_at(32000)) == (48000, 2400, 1600)
    np.testing.assert_array_equal(sofa.read_ir(path, 0, sample_rate=None), h48[0])
    h = sofa.read_ir(path, 0)
    assert h.shape == (4, 1600) and h.dtype == np.float64
    np.testing.assert_array_equal(h, wav.resample(h48[0], 48000, 32000))
    _direct_path_checks(h, rel)


def test_bad_files(tmp_path):
    path, _, _ = _room(tmp_path, sample_rate=0)
    with pytest.raises(ValueError, match=r"room.sofa: Data.SamplingRate is \[0.0\], expected one"):
        sofa.open_room(path)

    path, _, _ = _room(tmp_path)
    _edit(path, lambda f: (f.__delitem__("Data.IR"), f.create_dataset("Data.IR", (4, 300), "f8")))
    with pytest.raises(ValueError, match=r"Data.IR has shape \(4, 300\), expected 3-D \(M, R, N\)"):
        sofa.open_room(path)

    path, _, _ = _room(tmp_path)
    _edit(path, lambda f: (f.__delitem__("SourcePosition"),
                           f.create_dataset("SourcePosition", data=np.zeros((5, 2)))))
    with pytest.raises(ValueError, match=r"SourcePosition has shape \(5, 2\), expected \(5, 3\)"):
        sofa.open_room(path)

    path, _, _ = _room(tmp_path)
    _edit(path, lambda f: f.__delitem__("Data.SamplingRate"))
    with pytest.raises(ValueError, match="'Data.SamplingRate' missing"):
        sofa.open_room(path)

    path, _, _ = _room(tmp_path)
    with pytest.raises(ValueError, match=r"index 5 outside \[0, 5\)"):
        sofa.read_ir(path, 5)

    text = tmp_path / "text.sofa"
    text.write_text("not hdf5 at all")
    with pytest.raises(ValueError, match="text.sofa: not a readable SOFA"):
        sofa.open_room(text)

    truncated = tmp_path / "trunc.sofa"
    truncated.write_bytes(path.read_bytes()[:2000])
    with pytest.raises(ValueError, match="trunc.sofa"):
        sofa.open_room(truncated)

    with pytest.raises(ValueError, match="missing.sofa: no such SOFA file"):
        sofa.open_room(tmp_path / "missing.sofa")


# --- image-source FOA RIRs ----------------------------------------------------------------

def _direct_path_checks(h, rel):
    """Channel-0 peak positive at distance/c·sr (±1); Y, Z, X there ∝ direction cosines."""
    dist = np.linalg.norm(rel)
    expected = dist / rooms.SPEED_OF_SOUND * SR
    p = int(np.argmax(h[0]))
    assert h[0, p] > 0
    assert abs(p - expected) <= 1.0
    u = rel / dist
    np.testing.assert_allclose(h[1:, p] / h[0, p], [u[1], u[2], u[0]], atol=2e-3)


def test_image_source_direct_path():
    room = rooms.Shoebox(size=(5.0, 4.0, 3.0), reflection=0.8, mic=(2.0, 1.5, 1.2))
    for src in ([3.5, 2.5, 1.0], [0.7, 0.5, 2.5], [2.1, 3.6, 1.2]):
        h = rooms.foa_rir(room, np.asarray(src), 8000)
        assert h.shape == (4, 8000)
        _direct_path_checks(h, np.asarray(src) - np.asarray(room.mic))
        # Reverberant: energy well after the direct path.
        p = int(np.argmax(h[0]))
        assert np.sum(h[0, p + 200 :] ** 2) > 0.1 * np.sum(h[0, : p + 200] ** 2)


def test_image_source_free_field_is_one_delayed_impulse():
    # No reflections (β = 0): only the direct image, amplitude 1/r, sinc centred on the delay.
    room = rooms.Shoebox(size=(5.0, 4.0, 3.0), reflection=0.0, mic=(2.0, 1.5, 1.2))
    src = np.asarray([3.0, 2.0, 1.5])
    h = rooms.foa_rir(room, src, 2000)
    dist = np.linalg.norm(src - room.mic)
    delay = dist / rooms.SPEED_OF_SOUND * SR
    nz = np.flatnonzero(h[0])
    assert nz.min() >= np.floor(delay) - 3 and nz.max() <= np.floor(delay) + 4
    np.testing.assert_allclose(h[0].sum(), 1 / dist, rtol=0.02)  # windowed sinc sums to ≈ 1
    # X/Y/Z carry the same impulse times the direction cosines.
    u = (src - room.mic) / dist
    np.testing.assert_allclose(h[1:], np.outer([u[1], u[2], u[0]], h[0]), atol=1e-12)


def test_embedded_rooms_are_foa(embedded_small):
    files = sorted((embedded_small / "room_ir").glob("*/*.sofa"))
    assert len(files) == 4
    for path in files:
        info = sofa.open_room(path)
        assert info.channels == 4 and info.ir_frames == 8000
        for m in range(info.measurements):
            _direct_path_checks(sofa.read_ir(path, m), info.positions[m])


def spherical_copy(src, dst):
    """``src`` with SourcePosition rewritten as SOFA spherical coordinates (azimuth and
    elevation in degrees, radius in metres), as measured SOFA sets often store them."""
    import shutil

    shutil.copy(src, dst)
    with h5py.File(dst, "r+") as f:
        xyz = f["SourcePosition"][()]
        r = np.linalg.norm(xyz, axis=1)
        sph = np.stack([np.degrees(np.arctan2(xyz[:, 1], xyz[:, 0])),
                        np.degrees(np.arcsin(xyz[:, 2] / r)), r], axis=1)
        f["SourcePosition"][...] = sph
        f["SourcePosition"].attrs["Type"] = np.bytes_(b"spherical")
        f["SourcePosition"].attrs["Units"] = np.bytes_(b"degree, degree, metre")
    return xyz


def test_spherical_positions_are_converted_for_2026(embedded_small, tmp_path):
    """SpAudSyn reads positions with python-sofa's get_values(system="cartesian"), which converts
    a spherical SourcePosition; the 2025 baseline (pysofaconventions) uses it as stored."""
    from s5jax.data import catalog

    src = sorted((embedded_small / "room_ir" / "valid").glob("*.sofa"))[0]
    xyz = spherical_copy(src, tmp_path / "sph.sofa")
    info = sofa.open_room(tmp_path / "sph.sofa")
    assert info.position_type == "spherical"
    np.testing.assert_allclose(info.cartesian_positions(), xyz, atol=1e-12)
    assert not np.allclose(info.positions, xyz)
    np.testing.assert_array_equal(sofa.open_room(src).cartesian_positions(), xyz)
    root = tmp_path / "ds"
    for split in ("train", "valid"):
        for role in ("sound_event", "interference", "noise"):
            (root / role / split).mkdir(parents=True)
        (root / "room_ir" / split).mkdir(parents=True)
        spherical_copy(src, root / "room_ir" / split / "r.sofa")
    rooms = {t: catalog.scan(root, task=t, sparse=("train", "valid")).splits["valid"].rooms[0]
             for t in ("dcase2025", "dcase2026")}
    np.testing.assert_allclose(rooms["dcase2026"].positions, xyz, atol=1e-12)
    np.testing.assert_array_equal(rooms["dcase2025"].positions, info.positions)


def test_read_ir_cache_follows_the_file(tmp_path):
    """Cached IRs are read-only, and a rewritten file is read afresh."""
    path, irs, pos = _room(tmp_path)
    h = sofa.read_ir(path, 1)
    assert sofa.read_ir(path, 1) is h and not h.flags.writeable
    sofa.write_room(path, -irs, pos)  # replaced atomically: another file version
    np.testing.assert_array_equal(sofa.read_ir(path, 1), -irs[1])
