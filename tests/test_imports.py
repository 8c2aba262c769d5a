"""The one-way import rule of docs/architecture.md, checked by parsing every module's imports."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "sketchcolor"

#: Each module may import only modules earlier in this list (docs/architecture.md).
ORDER = [
    "errors", "config", "device", "parallel", "io", "color", "conditioning", "schedules", "models", "denoiser",
    "samplers", "checkpoint", "metrics", "compose", "pipeline", "data", "training", "evaluation", "sharding",
    "ui", "cli",
]  # fmt: skip
#: Extra prohibitions on top of the order.
FORBIDDEN = {"samplers": {"models", "denoiser", "checkpoint"}, "models": {"schedules"}}


def module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE).with_suffix("")
    return rel.parts[0]


def internal_imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    found = set()
    depth = len(path.relative_to(PACKAGE).parts) - 1
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level == 0 and node.module and node.module.startswith("sketchcolor."):
                found.add(node.module.split(".")[1])
            elif node.level > 0:
                if node.level - 1 == depth and node.module:
                    found.add(node.module.split(".")[0])
                elif node.level - 1 == depth:
                    found.update(a.name for a in node.names)
                elif node.module and node.level - 1 < depth:
                    continue  # import inside a subpackage (models.unet -> models.x)
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("sketchcolor."):
                    found.add(a.name.split(".")[1])
    return found


MODULES = sorted(
    p for p in PACKAGE.rglob("*.py") if module_name(p) not in ("__init__", "__main__", "weights")
)


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_flow_one_way(path):
    name = module_name(path)
    assert name in ORDER, (
        f"{name} is not placed in the import order (tests/test_imports.py, docs/architecture.md)"
    )
    allowed = set(ORDER[: ORDER.index(name)]) - FORBIDDEN.get(name, set())
    imported = internal_imports(path) - {name, "__version__"}
    assert imported <= allowed, f"{name} imports {sorted(imported - allowed)}, which come later in the order"


def test_package_import_is_light():
    code = "import sys, sketchcolor; print('torch' in sys.modules, 'PIL' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


def test_cli_import_does_not_load_torch():
    """``sketchcolor --help`` and option errors answer without importing torch (cold start)."""
    code = "import sys, sketchcolor.cli; print('torch' in sys.modules, 'numpy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


def test_the_cli_works_without_click_installed(tmp_path):
    """click is no dependency (typer vendors its own copy): a core install has none to import.

    A child process where ``import click`` fails runs a command and a command's own usage error.
    """
    blocker = tmp_path / "sitecustomize.py"
    blocker.write_text(
        "import sys\n"
        "class _NoClick:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'click' or name.startswith('click.'):\n"
        "            raise ModuleNotFoundError(\"No module named 'click'\")\n"
        "        return None\n"
        "sys.meta_path.insert(0, _NoClick())\n"
    )
    env = {"PYTHONPATH": f"{tmp_path}:{PACKAGE.parent}", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    probe = subprocess.run([sys.executable, "-c", "import click"], env=env, capture_output=True, text=True)
    assert probe.returncode != 0  # the blocker works
    typer_needs_click = subprocess.run(
        [sys.executable, "-c", "import typer"], env=env, capture_output=True, text=True
    )
    if typer_needs_click.returncode != 0:
        pytest.skip("this typer imports click itself (older typer): nothing to check")
    done = subprocess.run(
        [sys.executable, "-m", "sketchcolor", "batch", str(tmp_path)], env=env, capture_output=True, text=True
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip() == "sketchcolor: error: Missing option '--output' / '-o'. (see --help)"
