"""The import graph of ``s5jax/`` against the layer table of docs/architecture.md.

Every import statement counts, function-local ones included (read with ``ast``, nothing is
imported). A module may import its own entry of the table and the rows below; never a row above
and never another entry of its own row.
"""

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "s5jax"
DOC = ROOT / "docs" / "architecture.md"


def read_layers(doc: str) -> list[list[str]]:
    """Module entries per row of the layer table, bottom row first."""
    rows = []
    for line in doc.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 3 and cells[0].isdigit():
            rows.append((int(cells[0]), re.findall(r"`(s5jax(?:\.\w+)*)`", cells[2])))
    assert [n for n, _ in rows] == list(range(1, len(rows) + 1)), "rows must be numbered 1, 2, …"
    assert all(entries for _, entries in rows), "every row must name its modules"
    return [entries for _, entries in rows]


def module_name(path: Path, package: Path) -> str:
    parts = path.relative_to(package.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path, package: Path, modules: set[str]) -> list[tuple[ast.stmt, str]]:
    """``(statement, imported module of the package)`` for every import, at any depth."""
    name, root = module_name(path, package), package.name
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            mod = node.module or ""
            if node.level:  # relative: resolve against this module's package
                base = name.split(".")[: len(name.split(".")) - node.level + (
                    path.name == "__init__.py")]
                mod = ".".join(base + ([mod] if mod else []))
            # ``from pkg import mod`` imports the module pkg.mod; ``from mod import name`` mod.
            found = [f"{mod}.{a.name}" if f"{mod}.{a.name}" in modules else mod
                     for a in node.names]
        else:
            continue
        out += [(node, m) for m in dict.fromkeys(found)
                if m == root or m.startswith(root + ".")]
    return out


def layer_of(module: str, layers: list[list[str]]) -> tuple[int, str] | None:
    """``(row, entry)`` of the longest entry that is ``module`` or a package holding it."""
    hits = [(i, e) for i, entries in enumerate(layers) for e in entries
            if module == e or module.startswith(e + ".")]
    return max(hits, key=lambda h: len(h[1])) if hits else None


def violations(package: Path, layers: list[list[str]]) -> list[str]:
    """Every import that breaks the layering, and every module in no layer."""
    files = sorted(package.rglob("*.py"))
    modules = {module_name(f, package) for f in files}
    problems = []
    for f in files:
        name, where = module_name(f, package), f.relative_to(package.parent)
        found = imports(f, package, modules)
        if name == package.name:  # the package root holds metadata only
            problems += [f"{where}:{n.lineno}: the package root imports {m}" for n, m in found]
            continue
        here = layer_of(name, layers)
        if here is None:
            problems.append(f"{where}: {name} is in no layer of docs/architecture.md")
            continue
        for node, m in found:
            there = layer_of(m, layers)
            if m == package.name or there == here:
                continue
            if there is None:
                problems.append(f"{where}:{node.lineno}: imports {m}, which is in no layer")
            elif there[0] > here[0]:
                problems.append(f"{where}:{node.lineno}: {name} (layer {here[0] + 1}) imports "
                                f"{m} (layer {there[0] + 1}, above)")
            elif there[0] == here[0]:
                problems.append(f"{where}:{node.lineno}: {name} imports {m}, another entry of "
                                f"its own layer {here[0] + 1}")
    return problems


def undocumented_local_imports(package: Path) -> list[str]:
    """Function-local imports without a comment saying they defer a dependency."""
    out = []
    for f in sorted(package.rglob("*.py")):
        lines = f.read_text().splitlines()
        tree = ast.parse("\n".join(lines), str(f))
        for fn in ast.walk(tree):
            if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(fn):
                if isinstance(node, (ast.Import, ast.ImportFrom)):
                    i, comment = node.lineno - 2, [lines[node.lineno - 1]]
                    while i >= 0 and lines[i].strip().startswith("#"):
                        comment.append(lines[i])
                        i -= 1
                    if "defer" not in " ".join(comment).lower():
                        out.append(f"{f.relative_to(package.parent)}:{node.lineno}")
    return out


def test_models_sit_below_training_convert_and_inference():
    layers = read_layers(DOC.read_text())
    models = layer_of("s5jax.models", layers)[0]
    for above in ("s5jax.data", "s5jax.training", "s5jax.convert", "s5jax.inference",
                  "s5jax.evaluate"):
        assert layer_of(above, layers)[0] > models, above
    assert layer_of("s5jax.modeldir", layers)[0] < models


def test_package_follows_the_documented_layers():
    assert violations(PACKAGE, read_layers(DOC.read_text())) == []


def test_function_local_imports_say_what_they_defer():
    assert undocumented_local_imports(PACKAGE) == []


def test_checker_catches_violations(tmp_path):
    pkg = tmp_path / "s5jax"
    files = {
        "__init__.py": "",
        "labels.py": "import numpy\n",
        "models/__init__.py": "",
        "models/net.py": (
            "from s5jax import labels\n"
            "from .. import labels as again\n"
            "from . import other\n"
            "def load(path):\n"
            "    from s5jax.training import checkpoint\n"  # upward, hidden in a function
            "    return checkpoint\n"
        ),
        "models/other.py": "from s5jax.inference.pipeline import S5Pipeline\n",
        "training/__init__.py": "",
        "training/checkpoint.py": "from s5jax.models import net\nimport s5jax.convert.x\n",
        "convert/__init__.py": "",
        "convert/x.py": "",
        "inference/__init__.py": "",
        "inference/pipeline.py": "from s5jax.training import checkpoint\n",
        "stray.py": "",
    }
    for rel, text in files.items():
        (pkg / rel).parent.mkdir(parents=True, exist_ok=True)
        (pkg / rel).write_text(text)
    layers = read_layers(
        "| # | layer | modules | never imports |\n|---|---|---|---|\n"
        "| 1 | base | `s5jax.labels` | |\n"
        "| 2 | models | `s5jax.models` | |\n"
        "| 3 | training, convert | `s5jax.training` `s5jax.convert` | |\n"
        "| 4 | inference | `s5jax.inference` | `s5jax.models` is not listed here |\n"
    )
    assert layers == [["s5jax.labels"], ["s5jax.models"], ["s5jax.training", "s5jax.convert"],
                      ["s5jax.inference"]]
    assert sorted(violations(pkg, layers)) == [
        "s5jax/models/net.py:5: s5jax.models.net (layer 2) imports s5jax.training.checkpoint "
        "(layer 3, above)",
        "s5jax/models/other.py:1: s5jax.models.other (layer 2) imports s5jax.inference.pipeline "
        "(layer 4, above)",
        "s5jax/stray.py: s5jax.stray is in no layer of docs/architecture.md",
        "s5jax/training/checkpoint.py:2: s5jax.training.checkpoint imports s5jax.convert.x, "
        "another entry of its own layer 3",
    ]
    assert undocumented_local_imports(pkg) == ["s5jax/models/net.py:5"]
    (pkg / "models" / "net.py").write_text(
        "def load():\n    # Deferred: heavy optional dependency.\n    import torch\n")
    assert undocumented_local_imports(pkg) == []
