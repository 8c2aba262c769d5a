"""Regenerate docs/cli.md from the CLI's own --help output.

Usage: python scripts/gen_cli_docs.py            (writes docs/cli.md)
       python scripts/gen_cli_docs.py --check    (exit 1 if docs/cli.md is stale)
tests/test_docs.py runs the check, so the reference can never drift from the code.
"""

from __future__ import annotations

import sys
from pathlib import Path

from typer.testing import CliRunner

from sketchcolor.cli import app

DOC = Path(__file__).resolve().parents[1] / "docs" / "cli.md"
INTRO_END = "<!-- generated below: python scripts/gen_cli_docs.py -->"


def commands() -> list[str]:
    import typer.main

    group = typer.main.get_command(app)
    return sorted(group.commands)  # type: ignore[attr-defined]


def render() -> str:
    runner = CliRunner()
    parts = []
    for args in [[]] + [[c] for c in commands()]:
        result = runner.invoke(app, [*args, "--help"], terminal_width=100)
        title = " ".join(["sketchcolor", *args])
        parts.append(f"## `{title}`\n\n```text\n{result.output.rstrip()}\n```\n")
    return "\n".join(parts)


def main() -> int:
    text = DOC.read_text(encoding="utf-8")
    head = text.split(INTRO_END)[0] + INTRO_END + "\n\n"
    new = head + render()
    if "--check" in sys.argv:
        if new != text:
            print(f"{DOC} is stale: run python scripts/gen_cli_docs.py", file=sys.stderr)
            return 1
        return 0
    DOC.write_text(new, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
