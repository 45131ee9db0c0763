"""Package dependency rules (DESIGN §2), checked on the imports in the source."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("cti", "ivr", "recordings", "dialplans", "hotline")
# package -> project modules it may import (prefix match); hotline composes everything.
ALLOWED: dict[str, tuple[str, ...]] = {
    "cti": ("cti",),
    "ivr": ("ivr", "cti"),
    "recordings": ("recordings", "cti"),
    "dialplans": ("dialplans", "ivr.model", "cti.channel_vars"),
}


def project_imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names)
    return {n for n in names if n.split(".")[0] in PACKAGES}


def _allowed(name: str, rules: tuple[str, ...]) -> bool:
    return any(name == r or name.startswith(r + ".") or r.startswith(name + ".") for r in rules)


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_package_imports_follow_the_rules(package: str) -> None:
    offences = []
    for path in sorted((ROOT / package).rglob("*.py")):
        for name in project_imports(path):
            if not _allowed(name, ALLOWED[package]):
                offences.append(f"{path.relative_to(ROOT)} imports {name}")
    assert not offences, "\n".join(offences)


def test_rules_catch_a_violation(tmp_path: Path) -> None:
    bad = tmp_path / "x.py"
    bad.write_text("from recordings.index import RecordingIndex\nimport hotline.app\n")
    assert {n for n in project_imports(bad) if not _allowed(n, ALLOWED["cti"])} >= {"recordings.index", "hotline.app"}
