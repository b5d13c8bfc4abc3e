"""The one-way import rule of docs/design.md, checked on the source: cli imports intsr (not
training, not torch: the wheel has neither); training imports intsr; nothing in intsr imports
cli, training or torch; inside intsr each room imports only the rooms below it, the float path
nothing above quant, arch, kernels and io; every import stands at the top of its file (module
level)."""
import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PKG = ROOT / "intsr"

# top-level package -> the repository's packages it may import besides itself
PACKAGES = {"intsr": set(), "cli": {"intsr"}, "training": {"intsr"}}
NO_TORCH = {"intsr", "cli"}  # installed by the wheel, which does not depend on torch

# room -> the intsr rooms it may import (kernels/* and floatpath/* are one room each)
ALLOWED = {
    "arch": set(), "quant": set(), "io": set(), "torchfile": {"io"},
    "kernels": {"kernels"},
    "floatpath": {"floatpath", "quant", "arch", "kernels", "io"},
    "pruning": {"arch"}, "cost": {"arch"},
    "precision": {"arch"},
    "weights": {"arch", "io", "precision", "pruning", "torchfile"},
    "threads": set(),
    "model": {"arch", "precision", "quant", "kernels", "threads"},
    "state": {"arch", "io", "quant", "torchfile"},
    "blind": {"floatpath", "io", "kernels", "model", "quant", "torchfile", "weights"},
    "forwardgrad": {"arch", "model", "quant"},
    "mest": {"arch"},
    "ensemble": {"io", "kernels"},
    "online": {"blind", "ensemble", "floatpath", "forwardgrad", "io", "kernels", "mest", "model",
               "precision", "quant", "state", "threads", "weights"},
    "evaluate": {"floatpath", "io", "kernels", "model", "online", "quant", "state", "weights"},
    "jobs": {"arch", "blind", "cost", "ensemble", "evaluate", "floatpath", "io", "kernels",
             "online", "quant", "state", "threads", "weights"},
    "__init__": {"online"},
}


def _room(path):
    rel = path.relative_to(PKG).with_suffix("")
    return rel.parts[0]


def _imports(tree):
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield node, [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            yield node, names


SOURCES = sorted(PKG.rglob("*.py"))
ALL_SOURCES = sorted(p for package in PACKAGES for p in (ROOT / package).rglob("*.py"))


@pytest.mark.parametrize("path", ALL_SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_packages_import_one_way(path):
    package = path.relative_to(ROOT).parts[0]
    for _node, names in _imports(ast.parse(path.read_text())):
        for name in names:
            top = name.split(".")[0]
            if top in PACKAGES and top != package:
                assert top in PACKAGES[package], f"{path.relative_to(ROOT)} imports {name}"
            if package in NO_TORCH:
                assert top != "torch", f"{path.relative_to(ROOT)} imports {name}"


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(PKG)))
def test_rooms_import_one_way(path):
    room = _room(path)
    assert room in ALLOWED, f"{room}: a new room needs its place in docs/design.md and here"
    tree = ast.parse(path.read_text())
    for _node, names in _imports(tree):
        for name in names:
            top = name.split(".")[0]
            if top == "intsr" and name.count(".") >= 1:
                target = name.split(".")[1]
                if (PKG / target).is_dir() or (PKG / f"{target}.py").is_file():
                    assert target == room or target in ALLOWED[room], \
                        f"{path.relative_to(PKG)} ({room}) imports intsr.{target}"


@pytest.mark.parametrize("path", ALL_SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_module_level_imports_come_first(path):
    body = ast.parse(path.read_text()).body
    seen_code = False
    for node in body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            assert not seen_code, f"{path.name}:{node.lineno}: import after code"
        elif not (isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)):
            seen_code = True


def test_light_rooms_stay_light():
    """The trainer and the cost tools import arch, pruning and cost without Numba or kernels."""
    code = ("import sys, intsr.arch, intsr.pruning, intsr.cost; "
            "heavy = [m for m in sys.modules "
            "         if m.startswith(('numba', 'intsr.kernels', 'torch'))]; "
            "sys.exit(1 if heavy else 0)")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_the_device_path_does_not_import_scipy_ndimage():
    """The online path and the CLI import the float path's resizer kernels but never run Eq. 1
    in float: scipy.ndimage (0.1-0.2 s of every `intsr` run's start) stays unimported."""
    code = ("import sys, intsr.online, intsr.jobs, cli.main; "
            "sys.exit(1 if 'scipy.ndimage' in sys.modules else 0)")
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT).returncode == 0


DESIGN = ROOT / "docs" / "design.md"
BEGIN, END = "<!-- rooms: generated from ALLOWED in tests/test_layout.py -->", "<!-- /rooms -->"


def rule_table():
    """ALLOWED as the Markdown table docs/design.md shows (one row a room)."""
    rows = ["| room | may import (intsr rooms) |", "|---|---|"]
    for room in sorted(ALLOWED):
        rows.append(f"| `{room}` | {', '.join(sorted(ALLOWED[room] - {room})) or '-'} |")
    return "\n".join(rows)


def test_design_md_states_the_rule_this_test_enforces():
    """docs/design.md's room table is ALLOWED itself (`python tests/test_layout.py` rewrites
    it): the document cannot drift from the rule."""
    text = DESIGN.read_text()
    assert BEGIN in text and END in text
    shown = text.split(BEGIN, 1)[1].split(END, 1)[0].strip()
    assert shown == rule_table(), "run `python tests/test_layout.py` to regenerate it"


if __name__ == "__main__":
    text = DESIGN.read_text()
    head, rest = text.split(BEGIN, 1)
    DESIGN.write_text(head + BEGIN + "\n" + rule_table() + "\n" + END + rest.split(END, 1)[1])
