"""Read PyTorch ``.pth`` / Lightning ``.ckpt`` files without torch and without running pickled code.

``torch.save`` writes a pickle whose tensors point at raw storages kept outside the pickle: in a
zip archive (``<prefix>/data.pkl`` + ``<prefix>/data/<key>``, the default since torch 1.6) or,
in the legacy format, as records appended after the pickle. This module unpickles with a
restricted ``pickle.Unpickler`` whose ``find_class`` never imports anything:

* torch's tensor-rebuild functions, storage classes and dtypes map to small numpy
  implementations here (a tensor becomes a C-contiguous ``np.ndarray`` copied out of its storage
  with the saved offset, size and stride; the file's byte order is honoured);
* a few harmless builtins (``OrderedDict``, ``set``, ``slice``, …) and numpy's array/scalar
  reconstruction map to safe equivalents;
* every other global — a Lightning or omegaconf class in ``hyper_parameters``,
  ``argparse.Namespace``, but equally ``os.system`` in a malicious file — becomes an inert
  :class:`Placeholder` subclass that records its name and the arguments and state pickle gave
  it, and never calls anything.

Choices: ``bfloat16`` tensors become ``ml_dtypes.bfloat16`` arrays (exact, and accepted by
``jax.numpy``); cast with ``.astype(np.float32)`` where float32 is wanted. Tensors that share a
storage become independent copies with the right values (numpy cannot alias torch views).
``requires_grad``, backward hooks and tensor subclass state are dropped.
"""

from __future__ import annotations

import _compat_pickle
import functools
import io
import os
import pickle
import zipfile
from collections import OrderedDict
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import ml_dtypes
import numpy as np

_TORCH_MAGIC = 0x1950A86A20F9469CFC6C  # first pickle of a legacy-format torch file
_TORCH_PROTOCOL = 1001

_STORAGE_DTYPES: dict[str, np.dtype] = {
    "DoubleStorage": np.dtype(np.float64),
    "FloatStorage": np.dtype(np.float32),
    "HalfStorage": np.dtype(np.float16),
    "BFloat16Storage": np.dtype(ml_dtypes.bfloat16),
    "LongStorage": np.dtype(np.int64),
    "IntStorage": np.dtype(np.int32),
    "ShortStorage": np.dtype(np.int16),
    "CharStorage": np.dtype(np.int8),
    "ByteStorage": np.dtype(np.uint8),
    "BoolStorage": np.dtype(np.bool_),
    "ComplexFloatStorage": np.dtype(np.complex64),
    "ComplexDoubleStorage": np.dtype(np.complex128),
    "UntypedStorage": np.dtype(np.uint8),
}

_TORCH_DTYPES: dict[str, np.dtype] = {
    **{
        name: np.dtype(dt)
        for names, dt in [
            (("float32", "float"), np.float32),
            (("float64", "double"), np.float64),
            (("float16", "half"), np.float16),
            (("bfloat16",), ml_dtypes.bfloat16),
            (("int8",), np.int8),
            (("int16", "short"), np.int16),
            (("int32", "int"), np.int32),
            (("int64", "long"), np.int64),
            (("uint8",), np.uint8),
            (("uint16",), np.uint16),
            (("uint32",), np.uint32),
            (("uint64",), np.uint64),
            (("bool",), np.bool_),
            (("complex64", "cfloat"), np.complex64),
            (("complex128", "cdouble"), np.complex128),
            (("float8_e4m3fn",), ml_dtypes.float8_e4m3fn),
            (("float8_e5m2",), ml_dtypes.float8_e5m2),
        ]
        for name in names
    }
}


class Placeholder:
    """Stand-in for an object of an untrusted class, or the result of an untrusted call.

    Each untrusted global ``module.name`` becomes its own subclass (``target`` holds the dotted
    name). Instances record what pickle passed them: ``args``/``kwargs`` (constructor or call
    arguments), ``state`` (``__setstate__``/BUILD), ``items`` (dict-style items) and ``elements``
    (list-style appends). Nothing is ever imported or called.
    """

    target: str = "?"

    def __new__(cls, *args: Any, **kwargs: Any) -> Placeholder:
        inst = object.__new__(cls)
        inst.__dict__.update(args=args, kwargs=kwargs, state=None, items={}, elements=[])
        return inst

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass  # everything is recorded by __new__

    def __setstate__(self, state: Any) -> None:
        self.__dict__["state"] = state

    def __setitem__(self, key: Any, value: Any) -> None:
        self.items[key] = value

    def append(self, value: Any) -> None:
        self.elements.append(value)

    def extend(self, values: Any) -> None:
        self.elements.extend(values)

    def __repr__(self) -> str:
        return f"<Placeholder {self.target} args={self.args!r}>"


def _placeholder_class(
    module: str, name: str, cache: dict[tuple[str, str], type[Placeholder]] | None = None
) -> type[Placeholder]:
    # One class per global and per load: a file can set attributes on the classes it creates,
    # and that must not leak into later loads.
    cache = {} if cache is None else cache
    if (module, name) not in cache:
        safe = "".join(c if c.isalnum() else "_" for c in name) or "_"
        cache[(module, name)] = type(safe, (Placeholder,), {"target": f"{module}.{name}"})
    return cache[(module, name)]


class _StorageType:
    """What a pickled storage class (``torch.FloatStorage``, …) stands for: its element dtype."""

    def __init__(self, name: str, dtype: np.dtype):
        self.name, self.dtype = name, dtype

    def __repr__(self) -> str:
        return f"<torch storage type {self.name}>"


class _Storage:
    """Raw bytes of one storage; typed 1-D numpy views are made on demand (native byte order)."""

    def __init__(self, data: bytes | None, dtype: np.dtype, big_endian: bool):
        self.data, self.dtype, self.big_endian = data, dtype, big_endian
        self._views: dict[np.dtype, np.ndarray] = {}

    def array(self, dtype: np.dtype) -> np.ndarray:
        if dtype not in self._views:
            n = len(self.data) // dtype.itemsize
            if self.big_endian and dtype.itemsize > 1:
                # Swap per scalar component (a complex number is two floats), via unsigned ints so
                # that dtypes numpy cannot byte-swap itself (bfloat16, float8) work too.
                unit = dtype.itemsize // 2 if dtype.kind == "c" else dtype.itemsize
                raw = np.frombuffer(
                    self.data, np.dtype(f">u{unit}"), count=n * dtype.itemsize // unit
                )
                arr = raw.astype(np.dtype(f"=u{unit}")).view(dtype)
            else:
                arr = np.frombuffer(self.data, dtype, count=n)
            self._views[dtype] = arr
        return self._views[dtype]


def _ints(value: Any, what: str) -> tuple[int, ...]:
    if not isinstance(value, (tuple, list)) or not all(
        isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in value
    ):
        raise ValueError(f"tensor {what} {value!r}: expected a tuple of ints")
    return tuple(int(v) for v in value)


def _tensor(storage: Any, offset: Any, size: Any, stride: Any, dtype: np.dtype | None = None):
    """A copy of the strided view ``storage[offset + Σ i_k stride_k]`` of shape ``size``."""
    if not isinstance(storage, _Storage):
        raise ValueError(f"tensor storage is {type(storage).__name__}, expected a torch storage")
    if storage.data is None:  # first pass over a legacy file: storages not read yet
        return None
    dtype = storage.dtype if dtype is None else dtype
    size, stride = _ints(size, "size"), _ints(stride, "stride")
    (offset,) = _ints((offset,), "offset")
    if len(size) != len(stride) or min(size + stride + (offset,), default=0) < 0:
        raise ValueError(f"tensor size {size}, stride {stride}, offset {offset}: inconsistent")
    if 0 in size:
        return np.zeros(size, dtype)
    flat = storage.array(dtype)
    last = offset + sum((n - 1) * s for n, s in zip(size, stride, strict=True))
    if last >= flat.size:  # as_strided would read past the buffer
        raise ValueError(
            f"tensor size {size}, stride {stride}, offset {offset} exceeds its storage of "
            f"{flat.size} elements"
        )
    view = np.lib.stride_tricks.as_strided(
        flat[offset:], shape=size, strides=[s * dtype.itemsize for s in stride], writeable=False
    )
    return view.copy(order="C")


def _rebuild_tensor(storage, storage_offset, size, stride):
    return _tensor(storage, storage_offset, size, stride)


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad, hooks, metadata=None):
    return _tensor(storage, storage_offset, size, stride)


def _rebuild_tensor_v3(
    storage, storage_offset, size, stride, requires_grad, hooks, dtype, metadata=None
):
    if not isinstance(dtype, np.dtype):
        raise ValueError(f"tensor dtype {dtype!r}: not a supported torch dtype")
    return _tensor(storage, storage_offset, size, stride, dtype)


def _rebuild_parameter(data, requires_grad, hooks):
    return data


def _rebuild_parameter_with_state(data, requires_grad, hooks, state):
    return data


def _rebuild_from_type_v2(func, new_type, args, state):
    # Only our own rebuild functions are callable here; anything else is a Placeholder class,
    # and "calling" one merely records the arguments.
    return func(*args)


def _latin1_encode(text: str, encoding: str = "utf-8") -> bytes:
    # Protocol-2 pickles store bytes as _codecs.encode(str, "latin1"); allow only that codec.
    if not isinstance(text, str) or encoding.lower().replace("-", "") not in ("latin1", "utf8"):
        raise ValueError(f"_codecs.encode({encoding!r}): only latin1/utf-8 of a str is allowed")
    return text.encode(encoding)


def _np_scalar(dtype, data=None):
    if not isinstance(dtype, np.dtype) or dtype.hasobject or not isinstance(data, bytes):
        raise ValueError(f"numpy scalar of dtype {dtype!r}: only plain data is allowed")
    return np.frombuffer(data, dtype, count=1)[0]


def _np_reconstruct(cls, shape, dtype):
    # numpy's pickles rebuild ndarray subclasses too; only plain ndarray is made here.
    return np.ndarray.__new__(np.ndarray, shape, dtype)


def _np_dtype(spec, align=False, copy=False):
    if not isinstance(spec, str):
        raise ValueError(f"numpy dtype {spec!r}: expected a dtype string")
    return np.dtype(spec, align=bool(align))


def _copyreg_reconstructor(cls, base, state):
    if isinstance(cls, type) and issubclass(cls, Placeholder):
        return cls(base, state)
    return _placeholder_class("copyreg", "_reconstructor")(cls, base, state)


_SAFE_GLOBALS: dict[tuple[str, str], Any] = {
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_tensor_v3"): _rebuild_tensor_v3,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter_with_state,
    ("torch._tensor", "_rebuild_from_type_v2"): _rebuild_from_type_v2,
    ("torch", "Size"): tuple,
    ("torch", "device"): lambda *args: ":".join(str(a) for a in args),
    ("collections", "OrderedDict"): OrderedDict,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("builtins", "bytearray"): bytearray,
    ("builtins", "complex"): complex,
    ("builtins", "slice"): slice,
    ("_codecs", "encode"): _latin1_encode,
    ("copyreg", "_reconstructor"): _copyreg_reconstructor,
    ("numpy", "dtype"): _np_dtype,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy.core.multiarray", "scalar"): _np_scalar,
    ("numpy._core.multiarray", "scalar"): _np_scalar,
    ("numpy.core.multiarray", "_reconstruct"): _np_reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _np_reconstruct,
}


def _safe_global(module: str, name: str, cache: dict) -> Any:
    if (module, name) in _SAFE_GLOBALS:
        value = _SAFE_GLOBALS[(module, name)]
        # Functions are handed out as fresh partials: BUILD can set attributes on whatever a
        # global resolves to, and a function's __defaults__ would persist across loads.
        return value if isinstance(value, type) else functools.partial(value)
    if module in ("torch", "torch.storage", "torch.cuda") and name in _STORAGE_DTYPES:
        return _StorageType(name, _STORAGE_DTYPES[name])
    if module == "torch" and name in _TORCH_DTYPES:
        return _TORCH_DTYPES[name]
    return _placeholder_class(module, name, cache)


class _Unpickler(pickle.Unpickler):
    def __init__(self, file: io.BufferedIOBase, storage: Callable[[tuple], _Storage] | None):
        super().__init__(file)
        self._storage = storage
        self._classes: dict[tuple[str, str], type[Placeholder]] = {}

    def find_class(self, module: str, name: str) -> Any:
        module, name = str(module), str(name)
        # Protocol-2 pickles name Python 2 modules (__builtin__, copy_reg); translate like
        # pickle's own find_class does (a dictionary lookup, nothing is imported).
        if (module, name) in _compat_pickle.NAME_MAPPING:
            module, name = _compat_pickle.NAME_MAPPING[(module, name)]
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        return _safe_global(module, name, self._classes)

    def persistent_load(self, pid: Any) -> Any:
        if self._storage is None:
            raise pickle.UnpicklingError(f"unexpected persistent id {pid!r}")
        if isinstance(pid, tuple) and pid and pid[0] == "module":
            return _placeholder_class("torch.serialization", "module", self._classes)(*pid[1:])
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"):
            raise pickle.UnpicklingError(f"unsupported persistent id {pid!r}")
        if not isinstance(pid[1], _StorageType):
            raise pickle.UnpicklingError(f"unsupported storage type {pid[1]!r}")
        return self._storage(pid)


def _unpickle(f: io.BufferedIOBase, storage: Callable[[tuple], _Storage] | None = None) -> Any:
    return _Unpickler(f, storage).load()


def _load_zip(path: Path) -> Any:
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
        pkls = sorted((n for n in names if n == "data.pkl" or n.endswith("/data.pkl")), key=len)
        if not pkls:
            raise ValueError("zip archive without data.pkl: not a torch.save file")
        prefix = pkls[0][: -len("data.pkl")]
        big_endian = False
        if prefix + "byteorder" in names:
            order = zf.read(prefix + "byteorder").decode().strip()
            if order not in ("little", "big"):
                raise ValueError(f"byteorder record {order!r}: expected 'little' or 'big'")
            big_endian = order == "big"
        cache: dict[str, _Storage] = {}

        def storage(pid: tuple) -> _Storage:
            _, stype, key, _location, numel = pid[:5]
            key = str(key)
            if key not in cache:
                record = f"{prefix}data/{key}"
                if record not in names:
                    raise ValueError(f"storage record {record} missing from the archive")
                data = zf.read(record)
                if len(data) < int(numel) * stype.dtype.itemsize:
                    raise ValueError(
                        f"storage {record}: {len(data)} bytes, expected "
                        f"{int(numel) * stype.dtype.itemsize}"
                    )
                cache[key] = _Storage(data, stype.dtype, big_endian)
            return cache[key]

        return _unpickle(io.BytesIO(zf.read(pkls[0])), storage)


def _load_legacy(f: io.BufferedIOBase) -> Any:
    if _unpickle(f) != _TORCH_MAGIC:
        raise ValueError("pickle without torch's magic number: not a torch.save file")
    if _unpickle(f) != _TORCH_PROTOCOL:
        raise ValueError("unsupported legacy torch protocol version")
    sys_info = _unpickle(f)
    little = not isinstance(sys_info, dict) or sys_info.get("little_endian", True)
    start = f.tell()

    # The storages follow the main pickle, but their element sizes are only known from it:
    # pass 1 collects the storage types (tensors come out as None), pass 2 builds the arrays.
    seen: dict[str, tuple[np.dtype, Any]] = {}

    def record(pid: tuple) -> _Storage:
        seen.setdefault(str(pid[2]), (pid[1].dtype, pid[5] if len(pid) > 5 else None))
        return _Storage(None, pid[1].dtype, not little)

    _unpickle(f, record)
    keys = _unpickle(f)
    if not isinstance(keys, list):
        raise ValueError("legacy storage key list missing")
    roots: dict[str, _Storage] = {}
    for key in keys:
        key = str(key)
        if key not in seen:
            raise ValueError(f"storage {key} listed but never used")
        dtype = seen[key][0]
        header = f.read(8)
        if len(header) < 8:
            raise ValueError(f"storage {key}: file ends before its record")
        numel = int.from_bytes(header, "little" if little else "big", signed=True)
        data = f.read(numel * dtype.itemsize)
        if numel < 0 or len(data) < numel * dtype.itemsize:
            raise ValueError(f"storage {key}: file ends inside its {numel} elements")
        roots[key] = _Storage(data, dtype, not little)

    views: dict[str, _Storage] = {}

    def storage(pid: tuple) -> _Storage:
        key = str(pid[2])
        if key not in roots:
            raise ValueError(f"storage {key} has no data record")
        view = pid[5] if len(pid) > 5 else None
        if view is None:
            return roots[key]
        # Pre-1.0 files may point at a slice of a root storage: (view_key, offset, size).
        view_key, offset, size = view
        if view_key not in views:
            item = roots[key].dtype.itemsize
            data = roots[key].data[int(offset) * item : (int(offset) + int(size)) * item]
            views[view_key] = _Storage(data, roots[key].dtype, not little)
        return views[view_key]

    f.seek(start)
    return _unpickle(f, storage)


def load(path: str | os.PathLike) -> Any:
    """Load a ``torch.save`` file (zip or legacy format) with tensors as numpy arrays.

    Returns the saved object: dicts/lists/tuples as saved (``OrderedDict`` stays one), tensors
    and parameters as ``np.ndarray`` (C-contiguous copies, bfloat16 as ``ml_dtypes.bfloat16``),
    ``torch.Size`` as tuple, torch dtypes as ``np.dtype``, and any other class or function as an
    inert :class:`Placeholder`. ``ValueError`` naming the path for a missing, truncated or
    corrupt file, or a file that is not a torch pickle.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no such file")
    try:
        with open(path, "rb") as f:
            head = f.read(4)
            f.seek(0)
            if head.startswith(b"PK\x03\x04") or zipfile.is_zipfile(f):
                f.close()
                return _load_zip(path)
            f.seek(0)
            if head[:1] != b"\x80":  # every torch pickle starts with PROTO (protocol ≥ 2)
                raise ValueError("not a pickle (expected a zip archive or a protocol-2+ pickle)")
            return _load_legacy(f)
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None
    except Exception as e:  # a corrupt file can fail anywhere in pickle or zipfile
        raise ValueError(
            f"{path}: not a readable PyTorch checkpoint ({type(e).__name__}: {e})"
        ) from None


def state_dict(obj: Any, strip_prefix: str | None = None) -> dict[str, np.ndarray]:
    """The parameter dictionary of a loaded checkpoint (or of a path, which is loaded first).

    Takes ``obj['state_dict']`` if present (Lightning), else ``obj['model']`` if that is a dict
    holding arrays, else ``obj``; keeps only array values; removes ``strip_prefix`` from the
    keys that start with it (e.g. ``"model."`` for the baseline's Lightning checkpoints).
    """
    if isinstance(obj, (str, os.PathLike)):
        obj = load(obj)
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    elif (
        isinstance(obj, dict)
        and isinstance(obj.get("model"), dict)
        and any(isinstance(v, np.ndarray) for v in obj["model"].values())
    ):
        obj = obj["model"]
    if not isinstance(obj, dict):
        raise ValueError(f"checkpoint object of type {type(obj).__name__}: expected a dict")
    out: dict[str, np.ndarray] = {}
    for key, value in obj.items():
        if not isinstance(value, np.ndarray):
            continue
        key = str(key)
        if strip_prefix and key.startswith(strip_prefix):
            key = key[len(strip_prefix) :]
        out[key] = value
    return out


def check_finite(sd: Mapping[str, Any], where: str) -> None:
    """``ValueError`` naming every floating-point tensor of ``sd`` that holds NaN or inf (a
    diverged run's weights would otherwise convert, and fail far from their cause)."""
    bad = []
    for key, value in sd.items():
        a = np.asarray(value) if hasattr(value, "dtype") else None
        if a is not None and (a.dtype.kind in "fc" or a.dtype == ml_dtypes.bfloat16):
            n = int(a.size - np.count_nonzero(np.isfinite(a)))
            if n:
                bad.append(f"{key} ({n} of {a.size} values)")
    if bad:
        shown = ", ".join(bad[:3]) + (f" and {len(bad) - 3} more" if len(bad) > 3 else "")
        raise ValueError(f"{where}: non-finite weights (NaN or inf) in {shown}; expected finite "
                         "weights")
