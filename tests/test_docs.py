import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_cli_reference_is_current():
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen_cli_docs.py"), "--check"], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr


def test_readme_has_exactly_two_setup_commands():
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"<!-- ci:(\w+) -->\n```bash\n(.*?)\n```\n<!-- /ci:\1 -->", readme, flags=re.S)
    assert [name for name, _ in blocks] == ["main", "test"]
    assert all("\n" not in cmd for _, cmd in blocks)


def test_changelog_has_unreleased_section():
    assert "## [Unreleased]" in (ROOT / "CHANGELOG.md").read_text()


def test_training_doc_lists_every_default_setting():
    from sketchcolor.config import TrainConfig, dumps_toml, to_dict

    doc = (ROOT / "docs" / "training.md").read_text()
    block = doc.split("<!-- generated: TrainConfig defaults -->\n```toml\n")[1].split("```")[0]
    assert block == dumps_toml(to_dict(TrainConfig()))


def test_shipped_recipes_load():
    from sketchcolor.config import TrainConfig, load_config_file

    for recipe in sorted((ROOT / "configs").glob("*.toml")):
        load_config_file(TrainConfig, recipe)


def test_type_check_passes():
    """The library is fully typed (STYLE.md 2.5); mypy runs with the settings in pyproject.toml."""
    proc = subprocess.run([sys.executable, "-m", "mypy"], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:]


def test_lint_passes():
    proc = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "src", "tests", "scripts", "benchmarks"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout[-3000:]
