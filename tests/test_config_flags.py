"""Every config × preset: fields that default to "nothing" can be set from the command line.

``python -m s5jax.train --dry_run`` parses the flags, checks the config's values and prints it
resolved, without scanning a dataset or compiling, so one subprocess per config × preset is cheap.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from absl import flags
from ml_collections import config_flags

from s5jax.training.loop import check_config

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted(p.stem for p in (ROOT / "configs").glob("*.py"))
VALUES = {str: "/some/where/x", int: 7, float: 2.5}  # a value of each placeholder type


def _module(name: str):
    spec = importlib.util.spec_from_file_location(f"cfg_{name}", ROOT / "configs" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _presets(module) -> list[str]:
    """The preset names a config knows, from its documented unknown-preset error."""
    with pytest.raises(ValueError, match="known presets: ") as e:
        module.get_config("no-such-preset")
    return re.search(r"known presets: (.*)$", str(e.value)).group(1).split(", ")


def _unset_fields(cfg, prefix: str = "") -> list[tuple[str, type]]:
    """(dotted name, declared type) of every field whose value is None."""
    out = []
    for key, value in cfg.items():
        name = f"{prefix}{key}"
        if hasattr(value, "items"):
            out += _unset_fields(value, name + ".")
        elif value is None:
            out.append((name, cfg.get_type(key)))
    return out


CASES = [(c, p) for c in CONFIGS for p in ["", *_presets(_module(c))]]


def _get(d, dotted: str):
    for part in dotted.split("."):
        d = d[part]
    return d


def test_every_unset_field_has_a_type():
    for name, preset in CASES:
        fields = _unset_fields(_module(name).get_config(preset))
        assert fields, f"{name}:{preset} has no unset field (expected at least init)"
        untyped = [f for f, t in fields if t not in VALUES]
        assert not untyped, f"{name}:{preset}: untyped None fields {untyped}"


def _parse(spec: str, args: list[str]):
    """The config ``python -m s5jax.train --config spec *args`` parses (absl + ml_collections'
    config flags, as the command defines them), in this process."""
    argv = ["train", "--config", str(ROOT / spec), *args]
    fv = flags.FlagValues()
    # sys_argv: the override flags are defined from the arguments (as from sys.argv in train).
    config_flags.DEFINE_config_file("config", None, "", flag_values=fv, lock_config=True,
                                    sys_argv=argv)
    fv(argv)
    return fv.config


def _overrides(name: str, preset: str) -> tuple[str, list[tuple[str, type]], list[str]]:
    fields = _unset_fields(_module(name).get_config(preset))
    spec = f"configs/{name}.py" + (f":{preset}" if preset else "")
    return spec, fields, [f"--config.{f}={VALUES[t]}" for f, t in fields]


@pytest.mark.parametrize("name, preset", CASES)
def test_override_unset_fields(name, preset):
    """Every config × preset: each unset field takes a value from its flag, and the config then
    passes the checks ``--dry_run`` makes (in this process: a subprocess per case imports JAX)."""
    spec, fields, args = _overrides(name, preset)
    cfg = _parse(spec, args)
    for f, t in fields:
        assert _get(cfg, f) == VALUES[t], (spec, f)
    check_config(cfg)


def test_override_unset_fields_from_the_command_line(tmp_path):
    """The command itself, for one config: ``--dry_run`` prints the resolved config with the
    overrides and writes nothing."""
    spec, fields, args = _overrides("resunetk", "smoke")
    workdir = tmp_path / "w"
    env = dict(os.environ, PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu")
    r = subprocess.run([sys.executable, "-m", "s5jax.train", "--config", spec, *args,
                        "--dry_run", "--workdir", str(workdir)], cwd=ROOT, env=env, text=True,
                       capture_output=True, timeout=300)
    assert r.returncode == 0, r.stderr
    resolved = json.loads(r.stdout)
    for f, t in fields:
        assert _get(resolved, f) == VALUES[t], f
    assert "config is valid" in r.stderr and str(workdir) in r.stderr
    assert not workdir.exists()  # a dry run writes nothing


def test_dry_run_reports_bad_values(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu")
    cmd = [sys.executable, "-m", "s5jax.train", "--config", "configs/resunetk.py:smoke",
           "--config.data.valid_limit=0", "--dry_run", "--workdir", str(tmp_path / "w")]
    r = subprocess.run(cmd, cwd=ROOT, env=env, text=True, capture_output=True, timeout=300)
    assert r.returncode == 2 and r.stdout == ""
    assert "config.data.valid_limit=0: expected ≥ 1" in r.stderr
    assert not (tmp_path / "w").exists()
