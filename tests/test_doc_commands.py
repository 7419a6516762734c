"""The documented commands are tests: every ``python -m s5jax.`` command in README.md and
docs/*.md (collected by ``tests/doc_commands.py``) runs here as a subprocess, against the
embedded datasets and tiny models, and must exit 0 and write what it promises.

Each command runs in its own sandbox folder (its cwd, with ``configs/`` linked in), so that two
commands writing ``models/resunetk`` never meet. Its words are kept; only these change:

* **placeholders** (:data:`DATASETS`, :data:`CHECKPOINTS`, :data:`MODELS`, recordings): a path
  the command reads is made to exist in the sandbox before it runs — an official-format
  checkpoint written here with tiny widths (the converter tests' writers), a model or work
  directory produced by the documented command that writes it (run first, once) or else
  converted from such a checkpoint, a copy of an embedded test soundscape. Dataset paths
  (``/data/…``, ``…/dev_set``) are replaced by the embedded dataset's root; absolute output
  paths (``/tmp/x``) are moved into the sandbox.
* **sizes**: training commands get the overrides of :data:`TINY` appended (documented in
  docs/training.md, "Documented commands are tests"), except for fields the command sets
  itself; nothing of the command is removed.

Commands run two at a time, each after the commands whose outputs it reads; training commands
that differ only in their explicit ``--workdir`` are one run (:func:`_train_signature`).
``$S5JAX_DATA`` points at the session's embedded datasets (``s5jax.data`` commands get an empty
one, so that they really generate). A command that cannot run this way goes into :data:`SKIP`
with its reason; ``test_collector_finds_the_documented_commands`` keeps that honest.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from tests import doc_commands as dc
from tests import quick_compile

ROOT = dc.ROOT
COMMANDS = dc.collect()

# Commands that are not run, with the reason (keyed by the command as collected). Keep empty.
SKIP: dict[str, str] = {}

# ---- sizes: appended to every `s5jax.train` command (docs/training.md) -----------------------
TINY_RUN = {
    "data.clip_seconds": "1.0", "data.batch_size": "2", "data.num_workers": "0",
    "data.valid_batch_size": "2", "data.valid_limit": "2",
    "train.num_steps": "2", "train.log_every": "1", "train.eval_every": "2",
    "train.checkpoint_every": "2", "train.audio_examples": "0", "train.progress": "false",
}
TINY_SEPARATOR = {"model.channels": "(4,8,8,16,16,16)", "model.dprnn_hidden": "8"}
TINY_TAGGER = {"model.embed_dim": "64", "model.depth": "2", "model.num_heads": "1"}
TINY = {"resunetk": TINY_RUN | TINY_SEPARATOR, "resunet": TINY_RUN | TINY_SEPARATOR,
        "m2d_at": TINY_RUN | TINY_TAGGER}
SEPARATOR_WIDTHS = (4, 8, 8, 16, 16, 16)  # the official-format checkpoints match TINY
TAGGER_DIM, TAGGER_DEPTH = 64, 2  # heads = D // 64 = 1, what `convert tagger` assumes

# ---- placeholders ------------------------------------------------------------------------------
# A dataset path (first match): the embedded dataset of that edition.
DATASETS = [(re.compile(r"2026"), "embedded_2026"),
            (re.compile(r"(^|/)(dev_set|data|DCASE2025Task4Dataset)(/|$)"), "embedded_small")]
# An official checkpoint, by file name (first match): what is written there.
CHECKPOINTS = [(re.compile(r"resunetk[^/]*\.ckpt$"), "resunetk"),
               (re.compile(r"resunet[^/]*\.ckpt$"), "resunet"),
               (re.compile(r"\.pth$"), "m2d_pth"),
               (re.compile(r"4c[^/]*\.ckpt$"), "m2dat_4c"),
               (re.compile(r"(1c|2026)[^/]*\.ckpt$"), "m2dat_1c"),
               (re.compile(r"m2d[^/]*\.ckpt$"), "m2dat")]
# A model directory no documented command writes, by name (first match): converted from the
# checkpoint of that kind.
MODELS = [(re.compile(r"resunetk"), "resunetk"), (re.compile(r"resunet"), "resunet"),
          (re.compile(r"m2d_as"), "m2d_pth"), (re.compile(r"4c"), "m2dat_4c"),
          (re.compile(r"1c|2026"), "m2dat_1c"), (re.compile(r"m2d"), "m2dat")]

# What each argument of each CLI is: inputs are made to exist, outputs are checked afterwards.
DATASET, MODEL, RECORDING, CHECKPOINT, OUTPUT = "dataset", "model", "recording", "ckpt", "out"
ROLES = {
    "s5jax.train": {"--config.data.root": DATASET, "--config.init": MODEL, "--workdir": OUTPUT},
    "s5jax.evaluate": {"--data": DATASET, "--tagger": MODEL, "--separator": MODEL,
                       "--out": OUTPUT, "--submission": OUTPUT},
    "s5jax.separate": {"--tagger": MODEL, "--separator": MODEL, "--out": OUTPUT, 0: RECORDING},
    "s5jax.convert": {1: CHECKPOINT, 2: OUTPUT},
    "s5jax.data.embedded": {"--out": OUTPUT},
}
SWITCHES = {  # options without a value
    "s5jax.train": {"--dry_run", "--distributed"},
    "s5jax.evaluate": {"--write-wavs", "--oracle-labels", "--no-oracle-pass", "--allow-empty",
                       "--overwrite", "--no-progress"},
    "s5jax.separate": {"--submission", "--overwrite", "--allow-empty"},
    "s5jax.convert": {"--overwrite"},
    "s5jax.data.embedded": set(),
}


class Args:
    """A command's arguments as ``[flag, value, joined]`` items (``flag`` None: positional)."""

    def __init__(self, module: str, words: list[str]):
        self.module, self.items = module, []
        i = 0
        while i < len(words):
            w = words[i]
            if w.startswith("--") and "=" in w:
                self.items.append([w.split("=", 1)[0], w.split("=", 1)[1], True])
            elif w.startswith("--") and w not in SWITCHES.get(module, ()) and i + 1 < len(words):
                self.items.append([w, words[i + 1], False])
                i += 1
            else:
                self.items.append([w if w.startswith("--") else None, w, False])
            i += 1

    def words(self) -> list[str]:
        out = []
        for flag, value, joined in self.items:
            if flag is None:
                out.append(value)
            elif flag in SWITCHES.get(self.module, ()):
                out.append(flag)
            else:
                out += [f"{flag}={value}"] if joined else [flag, value]
        return out

    def get(self, flag: str) -> str | None:
        return next((v for f, v, _ in self.items if f == flag), None)

    def has(self, flag: str) -> bool:
        return any(f == flag for f, _, _ in self.items)

    def positionals(self) -> list[list]:
        return [item for item in self.items if item[0] is None]

    def role(self, item) -> str | None:
        roles = ROLES.get(self.module, {})
        if item[0] is not None:
            return roles.get(item[0])
        index = next(i for i, p in enumerate(self.positionals()) if p is item)
        return roles.get(index, roles.get(0) if 0 in roles and 1 not in roles else None)


def _words(cmd: dc.DocCommand) -> list[str]:
    text = dc.expand_synopsis(cmd.text) if cmd.is_synopsis else cmd.text
    return shlex.split(text)


def _same_config(cmd: dc.DocCommand, args: Args) -> bool:
    words = _words(cmd)
    other = Args(words[2], words[3:])
    return (words[2] == "s5jax.train" and not other.has("--dry_run")
            and other.get("--config") == args.get("--config"))


def _train_signature(cmd: dc.DocCommand):
    """What a training command does apart from where it writes (None: not such a command).
    Commands that differ only in an explicit ``--workdir`` are one run: their work directories
    are handled alike (an absolute one is moved into the sandbox)."""
    words = _words(cmd)
    args = Args(words[2], words[3:])
    if words[2] != "s5jax.train" or args.has("--dry_run") or not args.has("--workdir"):
        return None
    config = Path(args.get("--config").partition(":")[0]).stem
    overrides = TINY[config] | {f.removeprefix("--config."): v for f, v, _ in args.items
                                if f and f.startswith("--config.")}
    return args.get("--config"), tuple(sorted(overrides.items()))


def _config_name(spec: str) -> str:
    """``runs/<name>``'s name for ``configs/x.py:a,b`` (what `train` uses by default)."""
    path, _, presets = spec.partition(":")
    module_spec = importlib.util.spec_from_file_location("doc_cfg", ROOT / path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module.get_config(presets or None).name


def _relative(value: str) -> str:
    """An output path inside the sandbox: absolute paths are re-rooted there."""
    return value.lstrip("/") if value.startswith("/") else value


def outputs(cmd: dc.DocCommand) -> list[str]:
    """Sandbox-relative paths a command writes that another command may read."""
    words = _words(cmd)
    module, args = words[2], Args(words[2], words[3:])
    if module == "s5jax.train" and not args.has("--dry_run"):
        workdir = args.get("--workdir")
        return [_relative(workdir) if workdir else f"runs/{_config_name(args.get('--config'))}"]
    if module == "s5jax.convert":
        return [_relative(args.positionals()[2][1]).rstrip("/")]
    return []


class Runner:
    """Runs documented commands once each (dependencies first), in their own sandboxes."""

    def __init__(self, base: Path, datasets: dict[str, Path], workers: int = 2):
        self.base, self.datasets = base, datasets
        self.done: dict[str, dict] = {}
        # Commands run `workers` at a time, each after the commands whose outputs it reads
        # (submitted first, so a waiting command never holds the pool against its producer).
        self.pool = ThreadPoolExecutor(workers)
        self.futures: dict[str, Future] = {}
        self.lock = threading.RLock()
        self.signatures: dict = {}
        self.consumed = {_relative(item[1]).rstrip("/") for cmd in COMMANDS
                         for args in [Args(_words(cmd)[2], _words(cmd)[3:])]
                         for item in args.items if args.role(item) == MODEL}
        self.producers: dict[str, dc.DocCommand] = {}
        for cmd in COMMANDS:
            if cmd.text not in SKIP:
                for path in outputs(cmd):
                    self.producers.setdefault(path, cmd)
        self.data_home = base / "s5jax-data"
        self.data_home.mkdir()
        for root in datasets.values():
            (self.data_home / root.name).symlink_to(root)
        self.store = base / "store"
        self.store.mkdir()
        self.store_lock = threading.Lock()

    # -- inputs --
    def checkpoint(self, kind: str) -> Path:
        """An official-format file of this kind with tiny widths (random weights), written once."""
        with self.store_lock:
            return self._checkpoint(kind)

    def _checkpoint(self, kind: str) -> Path:
        path = self.store / f"{kind}.{'pth' if kind == 'm2d_pth' else 'ckpt'}"
        if path.exists():
            return path
        torch = pytest.importorskip("torch")
        pytest.importorskip("torchlibrosa")
        pytest.importorskip("nnAudio")
        from tests.reference import resunet, slot_tagger, vit
        from tests.test_convert_tagger import evar_pth

        torch.manual_seed(0)
        tagger_kw = dict(dim=TAGGER_DIM, depth=TAGGER_DEPTH, heads=TAGGER_DIM // 64)
        if kind in ("resunet", "resunetk"):
            model = resunet.randomize_(resunet.ResUNet30(3 if kind == "resunetk" else 1,
                                                         SEPARATOR_WIDTHS))
            resunet.save_lightning(model, path)
            return path
        if kind == "m2dat":
            model = vit.randomize_(vit.M2dAt(**tagger_kw))
        elif kind == "m2d_pth":
            pth = evar_pth(vit.randomize_(vit.M2dAt(**tagger_kw)), TAGGER_DIM)
            torch.save({"model": {k: torch.from_numpy(np.asarray(v))
                                  for k, v in pth["model"].items()}}, path)
            return path
        elif kind == "m2dat_1c":
            model = slot_tagger.randomize_(slot_tagger.M2dAtSlots(**tagger_kw))
        else:
            model = slot_tagger.randomize_(slot_tagger.M2dAtSpatial(nchan=4, **tagger_kw))
        torch.save({"state_dict": {f"model.{k}": v for k, v in model.state_dict().items()},
                    "epoch": 0, "global_step": 0}, path)
        return path

    def model_dir(self, kind: str) -> Path:
        path = self.store / f"model-{kind}"
        with self.store_lock:
            if path.exists():
                return path
            checkpoint = self._checkpoint(kind)
            from s5jax.convert import separator, tagger

            convert = separator if kind.startswith("resunet") else tagger
            return convert.convert_file(checkpoint, path)

    def dataset(self, value: str) -> Path:
        for pattern, name in DATASETS:
            if pattern.search(value):
                return self.datasets[name]
        raise AssertionError(f"dataset path {value!r} matches no entry of DATASETS")

    def provide(self, sandbox: Path, role: str, value: str, cmd: dc.DocCommand) -> str:
        """Make the input ``value`` exist in ``sandbox``; return the value to pass."""
        if role == DATASET:
            return str(self.dataset(value))
        value = _relative(value)
        target = sandbox / value
        if role == OUTPUT or target.exists():
            return value
        target.parent.mkdir(parents=True, exist_ok=True)
        kind = lambda table: next((k for p, k in table if p.search(value.rstrip("/"))), None)  # noqa: E731
        if role == CHECKPOINT or (role == MODEL and value.endswith((".ckpt", ".pth"))):
            found = kind(CHECKPOINTS)
            assert found, f"{cmd.sources}: checkpoint {value!r} matches no entry of CHECKPOINTS"
            target.symlink_to(self.checkpoint(found))
        elif role == MODEL:
            producer = self.producer(value, cmd)
            if producer is not None:
                made = self.run(producer)["sandbox"] / value.rstrip("/")
                target.symlink_to(made)
            else:
                found = kind(MODELS)
                assert found, f"{cmd.sources}: model {value!r} matches no entry of MODELS"
                target.symlink_to(self.model_dir(found))
        elif role == RECORDING:
            edition = "embedded_2026" if "2026" in value else "embedded_small"
            scapes = sorted((_test_folder(self.datasets[edition]) / "soundscape").glob("*.wav"))
            if value.endswith(".wav"):
                shutil.copy(scapes[0], target)
            else:  # a folder of recordings
                target.mkdir()
                for s in scapes[:2]:
                    shutil.copy(s, target / s.name)
        return value

    def producer(self, value: str, cmd: dc.DocCommand) -> dc.DocCommand | None:
        """The documented command that writes the model/work directory ``value``, if any."""
        if value.endswith((".ckpt", ".pth")):
            return None
        producer = self.producers.get(_relative(value).rstrip("/"))
        return producer if producer is not None and producer is not cmd else None

    def dependencies(self, cmd: dc.DocCommand) -> list[dc.DocCommand]:
        words = _words(cmd)
        args = Args(words[2], words[3:])
        found = [self.producer(item[1], cmd) for item in args.items if args.role(item) == MODEL]
        if words[2] == "s5jax.train" and not args.has("--dry_run"):
            # The same config after an earlier command of it: its compilations are then cached.
            found.append(next(c for c in COMMANDS if c.text not in SKIP and _same_config(c, args)))
        return [p for p in found if p is not None and p is not cmd]

    # -- running --
    def submit(self, cmd: dc.DocCommand, chain: tuple = ()) -> Future:
        with self.lock:
            assert cmd.text not in chain, f"dependency cycle at {cmd.sources}"
            if cmd.text not in self.futures:
                same = self.signatures.get(_train_signature(cmd))
                if same is not None and not set(outputs(cmd)) & self.consumed:
                    # The same training run written elsewhere, read by no command: run once.
                    self.futures[cmd.text] = self.submit(same, chain)
                    return self.futures[cmd.text]
                for dep in self.dependencies(cmd):
                    self.submit(dep, (*chain, cmd.text))
                self.futures[cmd.text] = self.pool.submit(self._run, cmd)
                self.signatures.setdefault(_train_signature(cmd), cmd)
                self.signatures.pop(None, None)
            return self.futures[cmd.text]

    def run(self, cmd: dc.DocCommand) -> dict:
        return self.submit(cmd).result()

    def _run(self, cmd: dc.DocCommand) -> dict:
        words = _words(cmd)
        module, args = words[2], Args(words[2], words[3:])
        assert module in ROLES, f"{cmd.sources}: no rules for {module}: add it to ROLES"
        sandbox = self.base / re.sub(r"[^\w.-]+", "_", cmd.sources[0])
        sandbox.mkdir()
        (sandbox / "configs").symlink_to(ROOT / "configs")
        for item in args.items:
            role = args.role(item)
            if role is not None:
                item[1] = self.provide(sandbox, role, item[1], cmd)
        argv = [sys.executable, "-m", module, *args.words()]
        if module == "s5jax.train" and not args.has("--dry_run"):
            config = Path(args.get("--config").partition(":")[0]).stem
            set_here = {f.removeprefix("--config.") for f, _, _ in args.items if f}
            argv += [f"--config.{k}={v}" for k, v in TINY[config].items() if k not in set_here]
        # These tiny programs run for seconds: compiled without LLVM's optimisations.
        env = quick_compile.env(PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu",
                                S5JAX_DATA=str(self.data_home))
        if module.startswith("s5jax.data."):
            env["S5JAX_DATA"] = str(sandbox / "s5jax-data")
        start = time.perf_counter()
        with open(sandbox / "stdout.txt", "w") as out, open(sandbox / "stderr.txt", "w") as err:
            proc = subprocess.Popen(argv, cwd=sandbox, env=env, stdout=out, stderr=err)
        timer = threading.Timer(900, proc.kill)  # a hung command must not hang the suite
        timer.start()
        _, status, usage = os.wait4(proc.pid, 0)  # this child's own CPU time
        timer.cancel()
        proc.returncode = os.waitstatus_to_exitcode(status)
        result = dict(sandbox=sandbox, args=args, argv=argv, rc=proc.returncode,
                      stdout=(sandbox / "stdout.txt").read_text(),
                      stderr=(sandbox / "stderr.txt").read_text(),
                      seconds=time.perf_counter() - start, cpu=usage.ru_utime + usage.ru_stime)
        (sandbox / "command.txt").write_text(
            f"{shlex.join(argv)}\nexit {proc.returncode} after {result['seconds']:.1f} s "
            f"({result['cpu']:.1f} s CPU)\n")
        self.done[cmd.text] = result
        assert proc.returncode == 0, (
            f"{', '.join(cmd.sources)}: `{cmd.text}` exited {proc.returncode}\n"
            f"ran: {shlex.join(argv[1:])}\n{result['stderr'][-3000:]}")
        return result


@pytest.fixture(scope="module")
def runner(tmp_path_factory, embedded_small, embedded_2026):
    runner = Runner(tmp_path_factory.mktemp("doc_commands"),
                    {"embedded_small": embedded_small, "embedded_2026": embedded_2026})
    yield runner
    runner.pool.shutdown(wait=True, cancel_futures=True)
    rows = [f"{r['seconds']:7.1f} s {r['cpu']:7.1f} s CPU  {text}"
            for text, r in runner.done.items()]
    total = sum(r["seconds"] for r in runner.done.values())
    (runner.base / "timings.txt").write_text("\n".join(rows) + f"\n{total:7.1f} s in all\n")


# ---- what each command must leave behind -------------------------------------------------------
def _test_folder(root: Path) -> Path:
    """The labelled test folder of a dataset root (2025: test/, 2026: synthesized/test/)."""
    return next((p for p in (root, root / "test", root / "synthesized" / "test")
                 if (p / "soundscape").is_dir()), root / "test")


def _check_train(r: dict) -> None:
    args, sandbox = r["args"], r["sandbox"]
    if args.has("--dry_run"):
        assert json.loads(r["stdout"][: r["stdout"].rindex("}") + 1])["model"]
        assert "config is valid" in r["stdout"] + r["stderr"]
        assert not (sandbox / "runs").exists()  # a dry run writes nothing
        return
    done = re.search(r"^done: (.*) \(", r["stdout"], re.M)
    assert done, r["stdout"]
    workdir = Path(done.group(1))
    assert workdir.is_relative_to(sandbox), workdir
    if args.get("--workdir"):
        assert workdir == sandbox / args.get("--workdir")
    assert (workdir / "model" / "config.json").is_file()
    assert any((workdir / "model" / "variables").iterdir())
    assert (workdir / "train_config.json").is_file()
    steps = [json.loads(line)["step"] for line in (workdir / "log.jsonl").read_text().splitlines()]
    final = json.loads((workdir / "train_config.json").read_text())["train"]["num_steps"]
    assert max(steps) == final


def _check_convert(r: dict) -> None:
    out = r["sandbox"] / r["args"].positionals()[2][1]
    assert (out / "config.json").is_file() and any((out / "variables").iterdir())


def _check_evaluate(r: dict) -> None:
    args, sandbox = r["args"], r["sandbox"]
    out = sandbox / args.get("--out")
    for name in ["results.json", "per_class.csv", "per_mixture.csv", "report.md",
                 "per_class.png", "fp_fn.png"]:
        assert (out / name).is_file(), name
    data = Path(args.get("--data")) if args.get("--data") else None
    scapes = sorted(p.stem for p in (_test_folder(data) / "soundscape").glob("*.wav")) \
        if data else []
    if data:
        assert json.loads((out / "results.json").read_text())["n_mixtures"] == len(scapes)
    wav_dirs = ([out / "estimates"] if args.has("--write-wavs") else []) + (
        [sandbox / args.get("--submission")] if args.get("--submission") else [])
    for d in wav_dirs:  # 2026 submissions hold the wavs in eval_out/
        names = [p.name for p in d.rglob("*.wav")]
        assert all(any(n.startswith(s + "_") for n in names) for s in scapes), (d, names)


def _check_separate(r: dict) -> None:
    args, sandbox = r["args"], r["sandbox"]
    out = sandbox / args.get("--out")
    stems = []
    for _, value, _ in args.positionals():
        p = sandbox / value
        stems += [q.stem for q in sorted(p.glob("*.wav"))] if p.is_dir() else [p.stem]
    labels = args.get("--labels")
    for stem in stems:
        assert args.has("--submission") or (out / f"{stem}.json").is_file(), stem
        wavs = sorted(out.rglob(f"{stem}_*.wav"))  # 2026 submissions: in eval_out/
        assert wavs, stem
        if labels:
            assert {w.stem for w in wavs} >= {f"{stem}_{lab}" for lab in labels.split(",")}


def _check_embedded(r: dict) -> None:
    root = r["sandbox"] / r["stdout"].strip().splitlines()[-1].rsplit(" (", 1)[0]
    assert (root / "embedded.json").is_file()
    out = r["args"].get("--out")
    assert root == (r["sandbox"] / out if out else r["sandbox"] / "s5jax-data" / root.name)


CHECKS = {"s5jax.train": _check_train, "s5jax.convert": _check_convert,
          "s5jax.evaluate": _check_evaluate, "s5jax.separate": _check_separate,
          "s5jax.data.embedded": _check_embedded}


# ---- the tests ---------------------------------------------------------------------------------
def test_collector_finds_the_documented_commands():
    """The docs hold (at least) the commands written when this test was; each is run or skipped
    for a stated reason, and no indented code block hides a command from the collector."""
    # 42 when this test was written; lower it only when the docs drop commands.
    assert len(COMMANDS) >= 42, [c.text for c in COMMANDS]
    modules = {c.module for c in COMMANDS}
    assert modules >= set(CHECKS), modules
    assert modules <= set(CHECKS), f"no checks for {modules - set(CHECKS)}: add them to CHECKS"
    assert dc.unfenced_commands() == [], "fence these command lines (```bash … ```)"
    stale = set(SKIP) - {c.text for c in COMMANDS}
    assert not stale, f"SKIP names commands the docs no longer hold: {stale}"


def test_collector_parsing(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "README.md").write_text(
        "text `python -m s5jax.inline` is not collected\n\n"
        "```bash\nmake venv && python -m s5jax.train --config a.py:x \\\n"
        "    --workdir w   # comment\n$ python -m s5jax.evaluate --out o; echo hi\n```\n"
        "```python\npython -m s5jax.not_shell\n```\n"
        "````\n```\npython -m s5jax.convert a b c\n````\n"
        "    python -m s5jax.indented x\n")
    (tmp_path / "docs" / "a.md").write_text(
        "```console\npython -m s5jax.data.embedded [--out DIR] [--scale small|full] [--seed N]\n"
        "python -m s5jax.train --config c.py --workdir w\n```\n"
        "```sh\npython -m s5jax.train --config c.py --workdir w\n```\n")
    got = [(c.text, c.sources) for c in dc.collect(tmp_path)]
    assert got == [
        ("python -m s5jax.train --config a.py:x --workdir w", ["README.md:4"]),
        ("python -m s5jax.evaluate --out o", ["README.md:6"]),
        ("python -m s5jax.convert a b c", ["README.md:13"]),
        ("python -m s5jax.data.embedded [--out DIR] [--scale small|full] [--seed N]",
         ["docs/a.md:2"]),
        ("python -m s5jax.train --config c.py --workdir w", ["docs/a.md:3", "docs/a.md:6"]),
    ]
    assert dc.unfenced_commands(tmp_path) == ["README.md:15"]
    assert (dc.expand_synopsis(got[3][0])
            == "python -m s5jax.data.embedded --out DIR --scale small --seed 0")
    assert dc.expand_synopsis(
        "python -m s5jax.train --config c.py[:PRESETS] [--config.FIELD=VALUE …]"
    ) == "python -m s5jax.train --config c.py:smoke --config.train.log_every=1"


@pytest.mark.xdist_group("doc_commands")  # one worker: commands share outputs and compilations
@pytest.mark.parametrize("cmd", COMMANDS, ids=[c.sources[0] for c in COMMANDS])
def test_documented_command(cmd, runner):
    if cmd.text in SKIP:
        pytest.skip(SKIP[cmd.text])
    if "PYTEST_XDIST_WORKER" not in os.environ:
        # Alone, keep the second core busy with the next command; under xdist the other worker
        # does, and each worker must run only the commands (and producers) of its own tests.
        nxt = COMMANDS[COMMANDS.index(cmd) + 1:][:1]
        for later in nxt:
            if later.text not in SKIP:
                runner.submit(later)
    result = runner.run(cmd)
    CHECKS[cmd.module](result)
