"""s5jax.torch_io: torch.save files read without torch, and never running pickled code."""

import argparse
import os
import pickle
import zipfile
from collections import OrderedDict

import ml_dtypes
import numpy as np
import pytest

from s5jax import torch_io

torch = pytest.importorskip("torch")

DTYPES = [
    (torch.float16, np.float16),
    (torch.bfloat16, ml_dtypes.bfloat16),
    (torch.float32, np.float32),
    (torch.float64, np.float64),
    (torch.int8, np.int8),
    (torch.int16, np.int16),
    (torch.int32, np.int32),
    (torch.int64, np.int64),
    (torch.uint8, np.uint8),
    (torch.bool, np.bool_),
]


def _random(dtype, shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    if dtype == torch.bool:
        return torch.rand(shape, generator=g) > 0.5
    if dtype.is_floating_point:
        return (torch.randn(shape, generator=g) * 100).to(dtype)
    lo, hi = (0, 256) if dtype == torch.uint8 else (-128, 128)
    return torch.randint(lo, hi, shape, generator=g).to(dtype)


def _as_numpy(t):
    t = t.detach()
    if t.dtype == torch.bfloat16:  # numpy has no bfloat16: compare through float32 (exact)
        return t.float().numpy()
    return t.numpy()


def _check(loaded, tensor, np_dtype):
    assert isinstance(loaded, np.ndarray)
    assert loaded.dtype == np.dtype(np_dtype)
    assert loaded.shape == tuple(tensor.shape)
    assert loaded.flags.c_contiguous
    if loaded.dtype == ml_dtypes.bfloat16:
        loaded = loaded.astype(np.float32)
    np.testing.assert_array_equal(loaded, _as_numpy(tensor))


class HParams:
    """A user class in hyper_parameters: must come back as an inert placeholder."""

    def __init__(self):
        self.lr = 1e-3
        self.layers = [32, 64]


class AttributeDict(dict):
    """Like Lightning's AttributeDict: a dict subclass."""


@pytest.fixture(params=[False, True], ids=["zip", "legacy"])
def legacy(request):
    return request.param


def _save(obj, path, legacy):
    torch.save(obj, path, _use_new_zipfile_serialization=not legacy)
    return path


def test_all_dtypes_ordered_state_dict(tmp_path, legacy):
    sd = OrderedDict(
        (f"layer.{i}.{str(td).split('.')[1]}", _random(td, (3, 5), seed=i))
        for i, (td, _) in enumerate(DTYPES)
    )
    sd["scalar"] = torch.tensor(2.5)
    sd["empty"] = torch.zeros(0, 4)
    out = torch_io.load(_save(sd, tmp_path / "sd.pth", legacy))
    assert isinstance(out, OrderedDict) and list(out) == list(sd)
    for (key, t), (_, np_dtype) in zip(list(sd.items())[: len(DTYPES)], DTYPES, strict=True):
        _check(out[key], t, np_dtype)
    _check(out["scalar"], sd["scalar"], np.float32)
    _check(out["empty"], sd["empty"], np.float32)


def test_strided_views_and_shared_storage(tmp_path, legacy):
    base = torch.arange(60, dtype=torch.float32).reshape(6, 10)
    views = {
        "base": base,
        "transposed": base.t(),
        "column": base[:, 3],
        "offset_slice": base[2:4, 5:9],
        "step": base.flatten()[1::7],
        "expanded": torch.randn(3, 1).expand(3, 4),  # stride 0
        "permuted": torch.randn(2, 3, 4).permute(2, 0, 1),
        "param": torch.nn.Parameter(torch.randn(4, 2).t()),
    }
    assert not views["transposed"].is_contiguous()
    out = torch_io.load(_save(views, tmp_path / "v.pth", legacy))
    for key, t in views.items():
        _check(out[key], t, np.float32)
    out["base"][0, 0] = -1.0  # copies, not aliases of one buffer
    assert out["transposed"][0, 0] == 0.0


def _rewrite_big_endian(src, dst, np_dtype):
    """A torch zip file as a big-endian machine would have written it."""
    unit = np.dtype(np_dtype).itemsize
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for info in zin.infolist():
            data = zin.read(info)
            if info.filename.endswith("/byteorder"):
                data = b"big"
            elif "/data/" in info.filename and unit > 1:
                data = np.frombuffer(data, f"<u{unit}").astype(f">u{unit}").tobytes()
            zout.writestr(info, data)


@pytest.mark.parametrize("torch_dtype, np_dtype", DTYPES, ids=[str(d) for d, _ in DTYPES])
def test_big_endian_byteorder(tmp_path, torch_dtype, np_dtype):
    t = _random(torch_dtype, (4, 3), seed=7)
    _save({"t": t.t()}, tmp_path / "le.pth", legacy=False)
    _rewrite_big_endian(tmp_path / "le.pth", tmp_path / "be.pth", np_dtype)
    with zipfile.ZipFile(tmp_path / "be.pth") as z:
        assert any(n.endswith("/byteorder") for n in z.namelist())
    _check(torch_io.load(tmp_path / "be.pth")["t"], t.t(), np_dtype)


def test_lightning_style_checkpoint(tmp_path, legacy):
    sd = OrderedDict(
        [
            ("model.conv.weight", torch.randn(2, 3, 3)),
            ("model.bn.num_batches_tracked", torch.tensor(7)),
        ]
    )
    hp = AttributeDict(lr=1e-3, name="resunet")
    ckpt = {
        "epoch": 3,
        "global_step": 1200,
        "pytorch-lightning_version": "2.5.1",
        "state_dict": sd,
        "optimizer_states": [
            {
                "state": {0: {"step": torch.tensor(12.0), "exp_avg": torch.ones(2, 3, 3)}},
                "param_groups": [{"lr": 1e-3, "betas": (0.9, 0.999), "amsgrad": True}],
            }
        ],
        "hyper_parameters": {"args": argparse.Namespace(lr=1e-4, n=3), "cfg": HParams(), "hp": hp},
        "dtype": torch.float16,
        "size": torch.Size([2, 3]),
        "builtins": {
            "set": {1, 2},
            "frozen": frozenset({3}),
            "slice": slice(1, 5),
            "b": b"\x00\xff",
        },
    }
    out = torch_io.load(_save(ckpt, tmp_path / "last.ckpt", legacy))
    assert out["epoch"] == 3 and out["global_step"] == 1200
    assert out["pytorch-lightning_version"] == "2.5.1"
    _check(out["state_dict"]["model.conv.weight"], sd["model.conv.weight"], np.float32)
    assert out["state_dict"]["model.bn.num_batches_tracked"].dtype == np.int64
    opt = out["optimizer_states"][0]
    assert opt["param_groups"][0] == {"lr": 1e-3, "betas": (0.9, 0.999), "amsgrad": True}
    np.testing.assert_array_equal(opt["state"][0]["exp_avg"], np.ones((2, 3, 3), np.float32))
    assert opt["state"][0]["step"] == 12.0
    hyper = out["hyper_parameters"]
    ns, cfg, ad = hyper["args"], hyper["cfg"], hyper["hp"]
    assert isinstance(ns, torch_io.Placeholder) and ns.target == "argparse.Namespace"
    assert ns.state == {"lr": 1e-4, "n": 3}
    assert isinstance(cfg, torch_io.Placeholder) and cfg.target.endswith("test_torch_io.HParams")
    assert cfg.state == {"lr": 1e-3, "layers": [32, 64]}
    assert isinstance(ad, torch_io.Placeholder) and ad.items == {"lr": 1e-3, "name": "resunet"}
    assert out["dtype"] == np.float16 and out["size"] == (2, 3)
    assert out["builtins"] == ckpt["builtins"]

    got = torch_io.state_dict(out, strip_prefix="model.")
    assert list(got) == ["conv.weight", "bn.num_batches_tracked"]
    assert torch_io.state_dict(tmp_path / "last.ckpt").keys() == sd.keys()


def test_state_dict_selection():
    a = np.zeros(2)
    assert torch_io.state_dict({"model": {"x.w": a, "n": 1}, "epoch": 1}) == {"x.w": a}
    # "model" that holds no arrays is not a state dict: fall back to the top level
    assert torch_io.state_dict({"model": {"name": "m"}, "w": a}) == {"w": a}
    got = torch_io.state_dict(OrderedDict([("m.a", a), ("b", a), ("c", "text")]), "m.")
    assert list(got) == ["a", "b"]
    with pytest.raises(ValueError, match="expected a dict"):
        torch_io.state_dict([a])


def test_truncated_and_corrupt_files(tmp_path, legacy):
    data = _save({"w": torch.randn(100, 100)}, tmp_path / "ok.pth", legacy).read_bytes()
    for name, payload in [
        ("trunc_half.pth", data[: len(data) // 2]),
        ("trunc_tail.pth", data[: len(data) - 100]),
        ("trunc_head.pth", data[:30]),
    ]:
        (tmp_path / name).write_bytes(payload)
        with pytest.raises(ValueError, match=rf"{name}: "):
            torch_io.load(tmp_path / name)


def test_not_a_checkpoint(tmp_path):
    (tmp_path / "text.pth").write_text("hello, not a pickle\n")
    with pytest.raises(ValueError, match=r"text\.pth: not a pickle"):
        torch_io.load(tmp_path / "text.pth")
    (tmp_path / "plain.pkl").write_bytes(pickle.dumps({"a": 1}, protocol=2))
    with pytest.raises(ValueError, match=r"plain\.pkl: .*magic number"):
        torch_io.load(tmp_path / "plain.pkl")
    with zipfile.ZipFile(tmp_path / "other.zip", "w") as z:
        z.writestr("readme.txt", "x")
    with pytest.raises(ValueError, match=r"other\.zip: zip archive without data\.pkl"):
        torch_io.load(tmp_path / "other.zip")
    (tmp_path / "empty.pth").write_bytes(b"")
    with pytest.raises(ValueError, match=r"empty\.pth"):
        torch_io.load(tmp_path / "empty.pth")
    with pytest.raises(ValueError, match=r"missing\.pth: no such file"):
        torch_io.load(tmp_path / "missing.pth")


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class _EvalEvil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (eval, (f"open({str(self.marker)!r}, 'w').close()",))


def _legacy_bytes(obj_pickle: bytes) -> bytes:
    sys_info = {"protocol_version": 1001, "little_endian": True, "type_sizes": {}}
    head = b"".join(pickle.dumps(x, protocol=2) for x in (0x1950A86A20F9469CFC6C, 1001, sys_info))
    return head + obj_pickle + pickle.dumps([], protocol=2)


def _torch_zip(obj_pickle: bytes, path):
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", obj_pickle)
        z.writestr("archive/byteorder", "little")
        z.writestr("archive/version", "3\n")
    return path


@pytest.mark.parametrize("evil_cls", [_Evil, _EvalEvil])
def test_malicious_pickles_do_not_run(tmp_path, evil_cls):
    marker = tmp_path / "pwned"
    payload = pickle.dumps({"w": np.ones(1), "evil": evil_cls(marker)}, protocol=2)
    # The payload is real: an ordinary unpickler runs it.
    sanity = tmp_path / "sanity"
    pickle.loads(pickle.dumps(evil_cls(sanity), protocol=2))
    assert sanity.exists()

    files = {
        "zip": _torch_zip(payload, tmp_path / "evil_zip.pth"),
        "legacy": tmp_path / "evil_legacy.pth",
        "plain": tmp_path / "evil_plain.pkl",
        "torch_saved": tmp_path / "evil_torch.pth",
    }
    files["legacy"].write_bytes(_legacy_bytes(payload))
    files["plain"].write_bytes(pickle.dumps(evil_cls(marker), protocol=2))
    torch.save({"w": torch.ones(2), "evil": evil_cls(marker)}, files["torch_saved"])

    for kind, path in files.items():
        try:
            out = torch_io.load(path)
        except ValueError:
            assert kind == "plain"  # no torch magic number
        else:
            evil = out["evil"]
            assert isinstance(evil, torch_io.Placeholder)
            assert evil.target in ("posix.system", "nt.system", "builtins.eval")
            assert isinstance(evil.args[0], str)
        assert not marker.exists(), kind


class _SubprocessEvil:
    def __reduce__(self):
        import subprocess

        return (subprocess.call, (["false"],))


def test_placeholder_records_arguments(tmp_path):
    src = pickle.dumps({"a": _SubprocessEvil(), "b": [HParams()]}, protocol=2)
    out = torch_io.load(_torch_zip(src, tmp_path / "sub.pth"))
    assert out["a"].target == "subprocess.call" and out["a"].args == (["false"],)
    assert out["b"][0].target.endswith("HParams") and out["b"][0].state["layers"] == [32, 64]
    assert "call" in repr(out["a"])


def test_out_of_bounds_view_is_rejected(tmp_path):
    # A crafted tensor whose size/stride reaches past its storage must not read foreign memory.
    t = torch.arange(4, dtype=torch.float32)
    _save({"t": t}, tmp_path / "ok.pth", legacy=False)
    with zipfile.ZipFile(tmp_path / "ok.pth") as z:
        entries = {i.filename: z.read(i) for i in z.infolist()}
    pkl_name = next(n for n in entries if n.endswith("data.pkl"))
    src = entries[pkl_name]
    assert b"K\x04\x85" in src  # size (4,) pickled as BININT1 4, TUPLE1
    entries[pkl_name] = src.replace(b"K\x04\x85", b"K\x09\x85", 1)
    with zipfile.ZipFile(tmp_path / "bad.pth", "w") as z:
        for name, data in entries.items():
            z.writestr(name, data)
    with pytest.raises(ValueError, match=r"bad\.pth: .*exceeds its storage of 4 elements"):
        torch_io.load(tmp_path / "bad.pth")


def test_build_on_safe_globals_does_not_persist(tmp_path):
    # GLOBAL _codecs.encode; BUILD (None, {"__defaults__": ("rot13",)}) → setattr on what
    # find_class returned. That must not change the reader's own function for later loads.
    src = (
        b"\x80\x02c_codecs\nencode\nN}X\x0c\x00\x00\x00__defaults__X\x05\x00\x00\x00rot13"
        b"\x85s\x86b."
    )
    with pytest.raises(ValueError, match=r"build\.pth: "):  # partial rejects the state
        torch_io.load(_torch_zip(src, tmp_path / "build.pth"))
    assert torch_io._latin1_encode.__defaults__ == ("utf-8",)
    again = pickle.dumps({"b": b"\x01\xff"}, protocol=2)
    assert torch_io.load(_torch_zip(again, tmp_path / "again.pth")) == {"b": b"\x01\xff"}
