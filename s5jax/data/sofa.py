"""SOFA room-impulse-response files (netCDF-4 = HDF5) read and written with h5py.

The baseline reads two things from a room's SOFA file (spec §2.2): ``SourcePosition`` (M, 3)
and one measurement of ``Data.IR`` (M, R, N) at a time. ``read_ir`` slices the HDF5 dataset, so
only that measurement's bytes are read, never the whole (possibly large) ``Data.IR``.
The baseline uses the IRs as stored, never reading ``Data.SamplingRate`` (spec §7 item 7), so a
48-kHz room would be played 1.5× too slow; SpatialScaper itself resamples IRs to the scene rate
with ``librosa.resample`` (``Scaper.get_room_irs_wav_xyz``, dead code in the baseline). s5jax does
what SpatialScaper does: ``read_ir`` resamples a measurement to the requested rate (soxr, as
librosa), and ``SofaInfo.frames_at(rate)`` is its length there. ``read_ir`` checks a file's header
once per process and keeps the last decoded measurements (``IR_CACHE_BYTES``, LRU).
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import datetime
import os
import stat
import threading
from pathlib import Path

import h5py
import numpy as np

from s5jax.atomic import atomic_path
from s5jax.audio import wav

SAMPLE_RATE = 32000


@dataclasses.dataclass(frozen=True)
class SofaInfo:
    """What a room's SOFA file holds: positions (M, 3) metres, R channels, N frames per IR."""

    path: Path
    positions: np.ndarray  # (M, 3) float64, as stored (SourcePosition)
    channels: int
    ir_frames: int
    sample_rate: float  # Data.SamplingRate (an int when whole)
    position_type: str = "cartesian"  # SourcePosition's Type attribute
    position_units: str = "metre"  # SourcePosition's Units attribute

    def cartesian_positions(self) -> np.ndarray:
        """``(M, 3)`` positions in metres, x y z: as python-sofa's
        ``Source.Position.get_values(system="cartesian")`` returns them (what SpAudSyn reads):
        a ``spherical`` SourcePosition (azimuth, elevation from the horizontal plane, radius;
        angles in degrees unless its Units say radians) is converted, a cartesian one is
        returned as stored."""
        if self.position_type.lower() != "spherical":
            return self.positions
        first = self.position_units.replace(" ", ",").split(",")[0].lower()
        az, el, r = self.positions.T
        if first not in ("radians", "rad"):
            az, el = np.deg2rad(az), np.deg2rad(el)
        return np.stack([r * np.cos(az) * np.cos(el), r * np.sin(az) * np.cos(el),
                         r * np.sin(el)], axis=1)

    @property
    def measurements(self) -> int:
        return int(self.positions.shape[0])

    def frames_at(self, sample_rate: int) -> int:
        """Length of one IR resampled to ``sample_rate`` (what ``read_ir`` returns)."""
        if sample_rate == self.sample_rate:
            return self.ir_frames
        return int(np.ceil(self.ir_frames * float(sample_rate) / self.sample_rate))


@contextlib.contextmanager
def _open(path: Path):
    if not path.is_file():
        raise ValueError(f"{path}: no such SOFA file")
    try:
        f = h5py.File(path, "r")
    except (OSError, ValueError) as e:
        raise ValueError(f"{path}: not a readable SOFA (netCDF-4/HDF5) file ({e})") from None
    try:
        yield f
    finally:
        f.close()


def _checked(path: Path, f: h5py.File) -> tuple[h5py.Dataset, np.ndarray, float]:
    """(Data.IR dataset, positions (M, 3), sample rate) after checking shapes and rate."""
    for name in ("Data.IR", "SourcePosition", "Data.SamplingRate"):
        if name not in f or not isinstance(f[name], h5py.Dataset):
            raise ValueError(f"{path}: SOFA variable {name!r} missing; expected it in the file")
    ir = f["Data.IR"]
    if ir.ndim != 3:
        raise ValueError(f"{path}: Data.IR has shape {ir.shape}, expected 3-D (M, R, N)")
    try:
        positions = np.asarray(f["SourcePosition"][()], dtype=np.float64)
        rate = np.asarray(f["Data.SamplingRate"][()], dtype=np.float64).ravel()
    except (OSError, ValueError, TypeError) as e:
        raise ValueError(f"{path}: unreadable SOFA variables ({e})") from None
    m = ir.shape[0]
    if positions.ndim != 2 or positions.shape[1] != 3 or positions.shape[0] not in (1, m):
        raise ValueError(
            f"{path}: SourcePosition has shape {positions.shape}, expected ({m}, 3) "
            "to match Data.IR's M"
        )
    if positions.shape[0] == 1 and m > 1:  # SOFA allows (I, C) = one position for all M
        positions = np.repeat(positions, m, axis=0)
    if not np.isfinite(positions).all():
        raise ValueError(f"{path}: SourcePosition has non-finite values")
    if rate.size < 1 or not np.all(rate == rate[0]) or not (np.isfinite(rate[0]) and rate[0] > 0):
        raise ValueError(
            f"{path}: Data.SamplingRate is {rate.tolist()}, expected one positive rate in Hz"
        )
    if m == 0 or ir.shape[1] == 0 or ir.shape[2] == 0:
        raise ValueError(f"{path}: Data.IR has shape {ir.shape}, expected non-empty (M, R, N)")
    r = float(rate[0])
    return ir, positions, int(r) if r.is_integer() else r


def _attr(var: h5py.Dataset, name: str, default: str) -> str:
    value = var.attrs.get(name, default)
    return value.decode("ascii", "replace") if isinstance(value, bytes) else str(value)


def open_room(path: str | os.PathLike) -> SofaInfo:
    """Check a SOFA file and return its geometry; reads only SourcePosition and the header."""
    path = Path(path)
    with _open(path) as f:
        ir, positions, rate = _checked(path, f)
        kind = _attr(f["SourcePosition"], "Type", "cartesian")
        if kind.lower() not in ("cartesian", "spherical"):
            raise ValueError(f"{path}: SourcePosition Type {kind!r}, expected 'cartesian' or "
                             "'spherical'")
        return SofaInfo(
            path=path,
            positions=positions,
            channels=int(ir.shape[1]),
            ir_frames=int(ir.shape[2]),
            sample_rate=rate,
            position_type=kind,
            position_units=_attr(f["SourcePosition"], "Units", "metre"),
        )


# Per-process caches of read_ir (Grain workers and reader threads call it for every event): the
# checked header of each file version, and the last decoded measurements up to IR_CACHE_BYTES.
# A file version is (path, inode, size, mtime): a rewritten or replaced file is read afresh. No
# file is kept open (an open HDF5 file would lock out a writer).
IR_CACHE_BYTES = 128 << 20
_cache_lock = threading.Lock()
_cache_pid = 0
_headers: dict[tuple, tuple[int, float]] = {}  # version → (M, rate)
_irs: collections.OrderedDict[tuple, np.ndarray] = collections.OrderedDict()
_irs_bytes = 0


def _version(path: Path) -> tuple:
    try:
        st = path.stat()
    except OSError:
        st = None
    if st is None or not stat.S_ISREG(st.st_mode):
        raise ValueError(f"{path}: no such SOFA file")
    return (str(path), st.st_ino, st.st_size, st.st_mtime_ns)


def _cached(key: tuple) -> np.ndarray | None:
    global _cache_pid, _irs_bytes
    with _cache_lock:
        if _cache_pid != os.getpid():  # a forked worker starts with its own, empty caches
            _cache_pid, _irs_bytes = os.getpid(), 0
            _headers.clear()
            _irs.clear()
        out = _irs.get(key)
        if out is not None:
            _irs.move_to_end(key)
        return out


def _remember(key: tuple, out: np.ndarray) -> None:
    global _irs_bytes
    with _cache_lock:
        if key in _irs or out.nbytes > IR_CACHE_BYTES:
            return
        _irs[key] = out
        _irs_bytes += out.nbytes
        while _irs_bytes > IR_CACHE_BYTES:
            _irs_bytes -= _irs.popitem(last=False)[1].nbytes


def read_ir(path: str | os.PathLike, index: int, sample_rate: float | None = SAMPLE_RATE
            ) -> np.ndarray:
    """One measurement ``Data.IR[index]`` as ``(R, N)`` float64 (an HDF5 slice, not the file),
    resampled to ``sample_rate`` if the file's rate differs (None: as stored).

    The result is read-only: it may be shared with later calls (per-process cache, above)."""
    path = Path(path)
    version = _version(path)
    key = (version, int(index), sample_rate)
    out = _cached(key)
    if out is not None:
        return out
    with _open(path) as f:
        header = _headers.get(version)
        if header is None:
            ir, _, rate = _checked(path, f)
            header = _headers[version] = (int(ir.shape[0]), rate)
        else:
            ir = f["Data.IR"]
        m, rate = header
        if not 0 <= int(index) < m:
            raise ValueError(f"{path}: measurement index {index} outside [0, {m})")
        try:
            out = np.asarray(ir[int(index)], dtype=np.float64)
        except (OSError, ValueError) as e:
            raise ValueError(f"{path}: Data.IR[{index}] unreadable ({e})") from None
    if not np.isfinite(out).all():
        raise ValueError(f"{path}: Data.IR[{index}] has non-finite values")
    if sample_rate is not None:
        out = wav.resample(out, rate, sample_rate)
    out.setflags(write=False)
    _remember(key, out)
    return out


# --- writing -------------------------------------------------------------------------------

def _text(value: str) -> np.bytes_:
    # Fixed-length ASCII attributes read back as NC_CHAR text in netCDF-C, as SOFA tools expect.
    return np.bytes_(value.encode("ascii"))


def _dimension(f: h5py.File, name: str, size: int) -> h5py.Dataset:
    """A netCDF-4 dimension without a coordinate variable: an HDF5 dimension scale."""
    d = f.create_dataset(name, shape=(size,), dtype="f4")
    d.make_scale(f"This is a netCDF dimension but not a netCDF variable.{size:10d}")
    return d


def _variable(f, name, data, dims, dimsets, chunks=None, **attrs) -> h5py.Dataset:
    # Chunked variables are deflated (netCDF-4 "zlib"); unchunked ones stay contiguous.
    compress = {"compression": "gzip", "compression_opts": 4, "shuffle": True} if chunks else {}
    v = f.create_dataset(name, data=data, chunks=chunks, **compress)
    for axis, dim in enumerate(dims):
        v.dims[axis].attach_scale(dimsets[dim])
    for key, value in attrs.items():
        v.attrs[key] = _text(value)
    return v


def write_room(
    path: str | os.PathLike,
    irs: np.ndarray,
    positions: np.ndarray,
    sample_rate: int = SAMPLE_RATE,
    *,
    listener_position: tuple[float, float, float] = (0.0, 0.0, 0.0),
    room_name: str = "room",
    dtype: str = "float64",
    date: str | None = None,
) -> Path:
    """Write a minimal SingleRoomSRIR-style SOFA file atomically (temp file + os.replace).

    Args:
      path: target ``.sofa`` file; its directory must exist.
      irs: ``(M, R, N)`` impulse responses, FOA ACN channel order, SN3D normalisation.
      positions: ``(M, 3)`` cartesian source positions in metres.
      sample_rate: stored in ``Data.SamplingRate``.
      listener_position: cartesian position of the microphone in metres.
      room_name: free text stored in the ``RoomDescription`` attribute.
      dtype: storage type of ``Data.IR`` ("float64" as SOFA tools write, or "float32").
      date: ``DateCreated``/``DateModified`` text ("YYYY-MM-DD hh:mm:ss"); None = now (UTC).
        A fixed date makes the file a pure function of its contents.
    """
    path = Path(path)
    irs = np.asarray(irs, dtype=np.float64)
    positions = np.asarray(positions, dtype=np.float64)
    if irs.ndim != 3 or 0 in irs.shape:
        raise ValueError(f"{path}: irs of shape {irs.shape}, expected non-empty (M, R, N)")
    m, r, n = irs.shape
    if positions.shape != (m, 3):
        raise ValueError(f"{path}: positions of shape {positions.shape}, expected ({m}, 3)")
    if not (np.isfinite(irs).all() and np.isfinite(positions).all()):
        raise ValueError(f"{path}: irs/positions have non-finite values")
    if dtype not in ("float64", "float32"):
        raise ValueError(f"{path}: dtype {dtype!r}, expected 'float64' or 'float32'")
    if not path.parent.is_dir():
        raise ValueError(f"{path}: directory {path.parent} does not exist")
    now = date or datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M:%S")
    with atomic_path(path) as tmp:
        # Creation order is tracked because netCDF-C lists variables in that order.
        with h5py.File(tmp, "w", libver="earliest", track_order=True) as f:
            attrs = {
                "Conventions": "SOFA",
                "Version": "2.1",
                "SOFAConventions": "SingleRoomSRIR",
                "SOFAConventionsVersion": "1.0",
                "APIName": "s5jax",
                "APIVersion": "1.0",
                "DataType": "FIR",
                "RoomType": "shoebox",
                "RoomDescription": room_name,
                "Title": f"FOA room impulse responses: {room_name}",
                "AuthorContact": "s5jax",
                "Organization": "s5jax",
                "License": "CC BY 4.0",
                "DateCreated": now,
                "DateModified": now,
                "ListenerShortName": "foa",
            }
            for key, value in attrs.items():
                f.attrs[key] = _text(value)
            dims = {
                name: _dimension(f, name, size)
                for name, size in (("M", m), ("R", r), ("N", n), ("C", 3), ("I", 1), ("E", 1))
            }
            _variable(f, "ListenerPosition", np.asarray([listener_position]), ("I", "C"), dims,
                      Type="cartesian", Units="metre")
            _variable(f, "ListenerUp", np.asarray([[0.0, 0.0, 1.0]]), ("I", "C"), dims)
            _variable(f, "ListenerView", np.asarray([[1.0, 0.0, 0.0]]), ("I", "C"), dims,
                      Type="cartesian", Units="metre")
            _variable(f, "ReceiverPosition", np.zeros((r, 3, 1)), ("R", "C", "I"), dims,
                      Type="cartesian", Units="metre")
            _variable(f, "SourcePosition", positions, ("M", "C"), dims,
                      Type="cartesian", Units="metre")
            _variable(f, "EmitterPosition", np.zeros((1, 3, 1)), ("E", "C", "I"), dims,
                      Type="cartesian", Units="metre")
            # One chunk per measurement: read_ir touches exactly one chunk.
            _variable(f, "Data.IR", irs.astype(dtype), ("M", "R", "N"), dims, chunks=(1, r, n),
                      ChannelOrdering="acn", Normalization="sn3d")
            _variable(f, "Data.SamplingRate", np.asarray([float(sample_rate)]), ("I",), dims,
                      Units="hertz")
            _variable(f, "Data.Delay", np.zeros((1, r)), ("I", "R"), dims)
    return path
