"""Every command line turns expected failures into ONE ``error:`` line naming the culprit, exit
status 2, and writes nothing: the output location is unchanged and a pre-existing unrelated
folder is byte for byte what it was. One row per bad input.

separate, evaluate, convert and data.embedded run in-process (``main(argv)``); train parses its
flags with absl (global state), so its rows run in ONE subprocess that forks per row.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import ml_collections
import numpy as np
import pytest

from s5jax import evaluate, modeldir, separate
from s5jax.audio import wav
from s5jax.convert.__main__ import main as convert_main
from s5jax.data.embedded import main as embedded_main

ROOT = Path(__file__).resolve().parents[1]
SR = 32000
CLIS = {"separate": separate.main, "evaluate": evaluate.main, "convert": convert_main,
        "data.embedded": embedded_main}


def snapshot(root: Path) -> dict:
    """Everything under ``root``: relative path → bytes (files), 'dir' (folders), mode bits."""
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_symlink():
            continue
        out[str(p.relative_to(root))] = ("dir" if p.is_dir() else p.read_bytes(),
                                         p.stat().st_mode)
    return out


def _wav(path, channels=4, n=SR // 2, sr=SR, value=None):
    x = 0.1 * np.random.default_rng(0).standard_normal((channels, n)).astype(np.float32)
    if value is not None:  # wav.write refuses non-finite audio: write it with soundfile
        import soundfile as sf

        x[:, n // 2] = value
        sf.write(str(path), x.T, sr, subtype="FLOAT")
        return path
    wav.write(path, x, sample_rate=sr)
    return path


class Env:
    """The sandbox of one row: inputs, models, an unrelated folder, the output location."""

    def __init__(self, tmp: Path, tiny_models, embedded_small, monkeypatch):
        self.tmp, self.monkeypatch = tmp, monkeypatch
        self.tagger, self.separator = tiny_models
        self.data = embedded_small
        self.precious = tmp / "precious"  # the user's own folder: must survive every row
        self.precious.mkdir()
        (self.precious / "thesis.tex").write_text("chapter 1")
        (self.precious / "figs").mkdir()
        (self.precious / "figs" / "a.png").write_bytes(b"\x89PNG...")
        self.good = _wav(tmp / "good.wav")
        self.out = tmp / "out"

    def model_copy(self, which: str, edit) -> Path:
        """A copy of a tiny model folder whose config.json is changed by ``edit(dict)``."""
        src = self.separator if which == "separator" else self.tagger
        dst = self.tmp / f"bad_{which}"
        shutil.copytree(src, dst)
        cfg = json.loads((dst / "config.json").read_text())
        edit(cfg)
        (dst / "config.json").write_text(json.dumps(cfg))
        return dst

    def disk_full_on(self, name: str) -> None:
        """The write of the file ``name`` (at its temporary name ``.<name>.*.tmp``) fails as on
        a full disk, after the outputs before it have been written."""
        real = Path.write_bytes

        def write_bytes(p, data):
            if p.name.startswith(f".{name}."):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(p))
            return real(p, data)

        self.monkeypatch.setattr(Path, "write_bytes", write_bytes)

    def read_only(self, path: Path) -> Path:
        """A folder nobody may write into (as root, where permissions do not bind, creating
        anything in it fails as on a read-only mount)."""
        path.mkdir()
        path.chmod(0o555)
        if os.geteuid() == 0:
            import tempfile

            real = tempfile.mkdtemp

            def mkdtemp(*args, dir=None, **kwargs):
                if dir is not None and Path(dir).absolute().is_relative_to(path):
                    raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(dir))
                return real(*args, dir=dir, **kwargs)

            self.monkeypatch.setattr(tempfile, "mkdtemp", mkdtemp)
        return path


def _sep(e: Env, *extra) -> list[str]:
    return ["--tagger", str(e.tagger), "--separator", str(e.separator), "--out", str(e.out),
            *extra]


def _nan_checkpoint(e: Env) -> tuple[Path, str]:
    torch = pytest.importorskip("torch")
    from tests.reference.resunet import ResUNet30, save_lightning

    ref = ResUNet30(3, (4, 8, 8, 12, 12, 16))
    with torch.no_grad():
        ref.base.encoder_block2.conv_block1.conv1.weight[0, 0, 0, 0] = float("nan")
    save_lightning(ref, e.tmp / "nan.ckpt")
    return e.tmp / "nan.ckpt", "base.encoder_block2.conv_block1.conv1.weight (1 of"


def _test_root(e: Env, edit) -> Path:
    root = e.tmp / "testset"
    shutil.copytree(e.data / "test", root)
    edit(root)
    return root


def _no_refs(root: Path):
    name = sorted((root / "soundscape").iterdir())[0].stem
    for p in (root / "oracle_target").glob(f"{name}_*.wav"):
        p.unlink()


def _stereo_ref(root: Path):
    ref = sorted((root / "oracle_target").iterdir())[0]
    x = wav.read(ref)
    wav.write(ref, np.concatenate([x, x]))
    return ref.name


# Each row: (id, CLI, setup(env) -> (argv, culprit that the line must contain)).
ROWS = [
    ("separate: --out under a file", "separate", lambda e: (
        (e.tmp / "afile").write_text("x"),
        _sep(e, str(e.good))[:-3] + ["--out", str(e.tmp / "afile" / "sub"), str(e.good)],
        "afile is a file")[1:]),
    ("separate: --out is a file", "separate", lambda e: (
        (e.tmp / "afile").write_text("x"),
        _sep(e)[:-2] + ["--out", str(e.tmp / "afile"), str(e.good)],
        "afile: exists and is not a folder")[1:]),
    ("separate: --out read-only", "separate", lambda e: (
        _sep(e)[:-2] + ["--out", str(e.read_only(e.tmp / "ro") / "o"), str(e.good)],
        "ro/o: cannot write there")),
    ("separate: output exists, no --overwrite", "separate", lambda e: (
        e.out.mkdir(), (e.out / "good.json").write_text("{}"),
        _sep(e, str(e.good)), "good.json (pass --overwrite)")[2:]),
    ("separate: 0-sample wav", "separate", lambda e: (
        _sep(e, str(e.good), str(_wav(e.tmp / "empty.wav", n=0))),
        "empty.wav: no samples")),
    ("separate: too short", "separate", lambda e: (
        _sep(e, str(_wav(e.tmp / "short.wav", n=300))),
        "short.wav: 300 samples (9.4 ms); expected at least 513")),
    ("separate: stereo recording", "separate", lambda e: (
        _sep(e, str(_wav(e.tmp / "st.wav", channels=2))),
        "st.wav: 2 channel(s); 4-channel first-order ambisonics (FOA")),
    ("separate: missing input", "separate", lambda e: (
        _sep(e, str(e.tmp / "nope.wav")), "nope.wav: no such file")),
    ("separate: not a wav", "separate", lambda e: (
        (e.tmp / "text.wav").write_text("hello"),
        _sep(e, str(e.tmp / "text.wav")), "text.wav: not a readable audio file")[1:]),
    ("separate: second input fails mid-run", "separate", lambda e: (
        _sep(e, str(e.good), str(_wav(e.tmp / "nan.wav", value=np.nan))),
        "nan.wav: non-finite samples")),
    ("separate: unknown class", "separate", lambda e: (
        _sep(e, str(e.good), "--labels", "Speech,Violin"), "--labels: ")),
    ("separate: --batch-chunks 0", "separate", lambda e: (
        _sep(e, str(e.good), "--batch-chunks", "0"), "--batch-chunks 0: expected ≥ 1")),
    ("separate: chunk shorter than the overlap allows", "separate", lambda e: (
        _sep(e, str(e.good), "--chunk-seconds", "0.01"),
        "chunk_seconds=0.01, overlap_seconds=1.0: chunks of 320 samples; expected at least 513")),
    ("separate: overlap over a third of the chunk", "separate", lambda e: (
        _sep(e, str(e.good), "--chunk-seconds", "2", "--overlap-seconds", "1"),
        "chunk_seconds=2.0, overlap_seconds=1.0: overlap 32000 > chunk/3")),
    ("separate: disk full while writing", "separate", lambda e: (
        e.disk_full_on("b_Speech.wav"),
        _sep(e, str(e.good), str(_wav(e.tmp / "b.wav")), "--labels", "Dishes,Speech"),
        "out/b_Speech.wav: write failed (No space left on device)")[1:]),
    ("separate: separator folder config ≠ variables", "separate", lambda e: (
        ["--separator", str(e.model_copy("separator", lambda c: c.update(
            channels=[8, 8, 8, 8, 8, 8]))), "--labels", "Speech", "--out", str(e.out),
         str(e.good)], "bad_separator: the model config does not match the stored variables")),
    ("separate: tagger folder config ≠ variables", "separate", lambda e: (
        ["--tagger", str(e.model_copy("tagger", lambda c: c.update(embed_dim=64))),
         "--separator", str(e.separator), "--out", str(e.out), str(e.good)],
        "bad_tagger: the model config does not match the stored variables")),
    ("separate: separator path missing", "separate", lambda e: (
        ["--separator", str(e.tmp / "none"), "--labels", "Speech", "--out", str(e.out),
         str(e.good)], "none: no such separator checkpoint")),
    ("separate: not a model folder", "separate", lambda e: (
        ["--separator", str(e.precious), "--labels", "Speech", "--out", str(e.out),
         str(e.good)], "precious: not an s5jax model directory")),
    ("separate: missing argument", "separate", lambda e: (
        [str(e.good), "--out", str(e.out)], "the following arguments are required: --separator")),
    ("evaluate: --data missing", "evaluate", lambda e: (
        ["--separator", str(e.separator), "--oracle-labels", "--data", str(e.tmp / "nodata"),
         "--out", str(e.out), "--no-progress"], "nodata: neither")),
    ("evaluate: soundscape without references", "evaluate", lambda e: (
        ["--separator", str(e.separator), "--oracle-labels", "--data",
         str(_test_root(e, _no_refs)), "--out", str(e.out), "--no-progress"],
        "have no reference")),
    ("evaluate: 2-channel reference", "evaluate", lambda e: (
        ["--separator", str(e.separator), "--oracle-labels", "--data",
         str(_test_root(e, _stereo_ref)), "--out", str(e.out), "--no-progress"],
        "2 channels, expected a mono reference")),
    ("evaluate: --out is a file", "evaluate", lambda e: (
        (e.tmp / "afile").write_text("x"),
        ["--separator", str(e.separator), "--oracle-labels", "--data", str(e.data),
         "--out", str(e.tmp / "afile"), "--no-progress"], "afile: exists and is not a folder")[1:]),
    ("evaluate: results exist, no --overwrite", "evaluate", lambda e: (
        e.out.mkdir(), (e.out / "results.json").write_text("{}"),
        ["--separator", str(e.separator), "--oracle-labels", "--data", str(e.data),
         "--out", str(e.out), "--no-progress"], "results.json (pass --overwrite)")[2:]),
    ("evaluate: --submission not an estimates folder", "evaluate", lambda e: (
        ["--separator", str(e.separator), "--oracle-labels", "--data", str(e.data),
         "--out", str(e.out), "--submission", str(e.precious), "--overwrite", "--no-progress"],
        "precious: holds figs, which is not an estimate of this test set")),
    ("evaluate: separator folder config ≠ variables", "evaluate", lambda e: (
        ["--separator", str(e.model_copy("separator", lambda c: c.update(slots=1,
                                                                         name="resunet"))),
         "--oracle-labels", "--data", str(e.data), "--out", str(e.out), "--no-progress"],
        "bad_separator: the model config does not match")),
    ("convert: --overwrite an unrelated folder", "convert", lambda e: (
        ["separator", str(_nan_checkpoint(e)[0]), str(e.precious), "--overwrite"],
        "precious: not an s5jax model directory")),
    ("convert: output exists", "convert", lambda e: (
        ["separator", str(e.tmp / "x.ckpt"), str(e.precious)],
        "precious: output directory already exists (pass --overwrite)")),
    ("convert: non-finite weights", "convert", lambda e: (lambda ckpt, culprit: (
        ["separator", str(ckpt), str(e.out)], culprit))(*_nan_checkpoint(e))),
    ("convert: missing input", "convert", lambda e: (
        ["tagger", str(e.tmp / "none.ckpt"), str(e.out)], "none.ckpt: no such file")),
    ("convert: output under a file", "convert", lambda e: (
        (e.tmp / "afile").write_text("x"),
        ["separator", str(_nan_checkpoint(e)[0]), str(e.tmp / "afile" / "m")],
        "afile")[1:]),
    ("data.embedded: --out holds other files", "data.embedded", lambda e: (
        ["--out", str(e.precious)], "precious: exists and is not an embedded s5jax dataset")),
    ("data.embedded: bad --scale", "data.embedded", lambda e: (
        ["--out", str(e.out), "--scale", "huge"], "--scale: invalid choice: 'huge'")),
]


@pytest.fixture
def env(tmp_path, tiny_models, embedded_small, monkeypatch):
    return Env(tmp_path, tiny_models, embedded_small, monkeypatch)


@pytest.mark.parametrize("cli,setup", [(c, s) for _, c, s in ROWS], ids=[r[0] for r in ROWS])
def test_bad_input_is_one_error_line_and_writes_nothing(cli, setup, env, capsys):
    argv, culprit = setup(env)
    before = snapshot(env.tmp)
    try:
        rc = CLIS[cli](argv)
    except SystemExit as e:  # argparse usage errors exit from inside parse_args
        rc = e.code
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert rc == 2, captured.err
    assert len(lines) == 1 and lines[0].startswith("error: "), captured.err
    assert culprit in lines[0], lines[0]
    assert "Traceback" not in captured.err
    assert snapshot(env.tmp) == before  # the output location and the user's folder untouched


# -- train: absl flags are process-global, so one subprocess forks a child per row --

TRAIN_ROWS = [
    ("unknown config field", ["--config", "configs/resunetk.py:smoke", "--config.data.bogus=3"],
     "--config.data.bogus: config.data has no field 'bogus' (its fields: batch_size,"),
    ("missing config file", ["--config", "configs/nope.py"],
     "--config configs/nope.py: no such config file"),
    ("unknown preset", ["--config", "configs/resunetk.py:smokey"],
     "unknown config preset 'smokey'"),
    ("bad value", ["--config", "configs/resunetk.py:smoke", "--config.data.batch_size=two"],
     "--config.data.batch_size=two: "),
    ("unknown flag", ["--config", "configs/resunetk.py:smoke", "--wrokdir=x"],
     "--wrokdir: unknown flag"),
    ("workdir is a file", ["--config", "configs/resunetk.py:smoke", "--workdir", "{tmp}/afile"],
     "--workdir {tmp}/afile: exists and is not a folder"),
    ("workdir under a file", ["--config", "configs/resunetk.py:smoke", "--workdir",
                              "{tmp}/afile/run"], "afile is a file"),
    ("dataset root missing", ["--config", "configs/resunetk.py:smoke", "--workdir", "{tmp}/run",
                              "--config.data.root={tmp}/nodata"], "no such dataset folder"),
    ("bad config value", ["--config", "configs/resunetk.py:smoke", "--workdir", "{tmp}/run",
                          "--config.train.best_mode=middle"], "config.train.best_mode='middle'"),
    # Values a run would only refuse after its dataset scan, or fail on in the model's init,
    # leaving a work directory behind (and --dry_run passed them).
    ("unknown schedule", ["--config", "configs/resunetk.py:smoke", "--workdir", "{tmp}/run",
                          "--config.optim.schedule=bogus"], "config.optim.schedule='bogus'"),
    ("nan learning rate", ["--config", "configs/resunetk.py:smoke", "--workdir", "{tmp}/run",
                           "--config.optim.lr=nan"], "config.optim.lr=nan"),
    ("zero width", ["--config", "configs/resunetk.py:smoke", "--workdir", "{tmp}/run",
                    "--config.model.dprnn_hidden=0"], "dprnn_hidden=0"),
    ("empty name", ["--config", "configs/resunetk.py:smoke", "--workdir", "{tmp}/run",
                    "--config.name="], "config.name=''"),
    ("heads not dividing the width", ["--config", "configs/m2d_at.py:smoke", "--workdir",
                                      "{tmp}/run", "--config.model.num_heads=3"],
     "embed_dim=16 is not divisible by num_heads=3"),
    ("unknown trainable", ["--config", "configs/m2d_at.py:smoke", "--workdir", "{tmp}/run",
                           "--config.trainable=bogus"], "config.trainable='bogus'"),
]

_DRIVER = textwrap.dedent("""
    import json, os, sys
    from absl import app
    import s5jax.train as train
    results = []
    for argv in json.loads(sys.argv[1]):
        err = os.path.join(sys.argv[2], f"err{len(results)}")
        pid = os.fork()
        if pid == 0:
            fd = os.open(err, os.O_WRONLY | os.O_CREAT)
            os.dup2(fd, 2)
            os.dup2(fd, 1)
            sys.argv = ["s5jax.train", *argv]
            try:
                app.run(train.main, flags_parser=train.parse_config_flags)
            except SystemExit as e:
                os._exit(e.code if isinstance(e.code, int) else 1)
            except BaseException:
                import traceback
                traceback.print_exc()
                os._exit(1)
            os._exit(0)
        _, status = os.waitpid(pid, 0)
        results.append([os.waitstatus_to_exitcode(status), open(err).read()])
    print(json.dumps(results))
""")


def test_train_bad_inputs(tmp_path):
    box, logs = tmp_path / "box", tmp_path / "logs"
    box.mkdir()
    logs.mkdir()
    (box / "afile").write_text("x")
    (box / "precious").mkdir()
    (box / "precious" / "notes.txt").write_text("mine")
    before = snapshot(box)
    argvs = [[a.replace("{tmp}", str(box)) for a in argv] for _, argv, _ in TRAIN_ROWS]
    env = dict(os.environ, PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu")
    r = subprocess.run([sys.executable, "-c", _DRIVER, json.dumps(argvs), str(logs)],
                       cwd=ROOT, env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    results = json.loads(r.stdout.strip().splitlines()[-1])
    bad = []
    for (name, _, culprit), (rc, err) in zip(TRAIN_ROWS, results, strict=True):
        culprit = culprit.replace("{tmp}", str(box))
        lines = [x for x in err.splitlines() if x.strip()]
        if not (rc == 2 and len(lines) == 1 and lines[0].startswith("error: ")
                and culprit in lines[0] and "Traceback" not in err):
            bad.append(f"{name}: rc={rc} stderr={err!r}")
    assert not bad, "\n".join(bad)
    assert snapshot(box) == before  # nothing written anywhere (no run directory either)


def test_nothing_loaded_before_the_output_checks(env, capsys, monkeypatch):
    """The output location is checked before the models are loaded (it used to fail only after
    the computation)."""
    from s5jax.inference import loading

    def boom(*args, **kwargs):
        raise AssertionError("models loaded before the output was checked")

    monkeypatch.setattr(separate, "load_pipeline", boom)
    monkeypatch.setattr(evaluate, "load_pipeline", boom)
    monkeypatch.setattr(loading, "load_pipeline", boom)
    (env.tmp / "afile").write_text("x")
    assert separate.main(_sep(env)[:-2] + ["--out", str(env.tmp / "afile" / "o"),
                                          str(env.good)]) == 2
    assert evaluate.main(["--separator", str(env.separator), "--oracle-labels", "--data",
                          str(env.data), "--out", str(env.tmp / "afile" / "o"),
                          "--no-progress"]) == 2
    assert capsys.readouterr().err.count("afile is a file") == 2


def test_nan_model_output_names_the_input(env, capsys):
    """A separator whose weights hold NaN gives a non-finite output: the error names the input
    and nothing is written."""
    cfg, variables = modeldir.load_model(env.separator)
    variables = jax.tree.map(lambda a: np.full_like(np.asarray(a), np.nan), variables)
    nan_dir = modeldir.save_model(env.tmp / "nan_sep", ml_collections.ConfigDict(cfg), variables)
    before = snapshot(env.tmp)
    assert separate.main(["--separator", str(nan_dir), "--labels", "Speech", "--out",
                          str(env.out), str(env.good)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "good.wav: the separated Speech is not finite" in err
    assert snapshot(env.tmp) == before
