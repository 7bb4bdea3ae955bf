"""The pinned floors that CI's min-versions job installs are the `>=` bounds of pyproject.toml."""

import re
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CONSTRAINTS = ROOT / ".github" / "constraints-min.txt"
PYPROJECT = ROOT / "pyproject.toml"


def test_constraints_pin_the_pyproject_floors():
    if not (CONSTRAINTS.exists() and PYPROJECT.exists()):  # tests run against an installed wheel
        pytest.skip("no checkout beside the tests")
    project = tomllib.loads(PYPROJECT.read_text())["project"]
    requirements = project["dependencies"] + project["optional-dependencies"]["examples"]
    floors = {}
    for requirement in requirements:
        match = re.fullmatch(r"([A-Za-z0-9_.-]+)>=([0-9.]+)", requirement)
        if match:
            floors[match[1].lower()] = match[2]
    pins = dict(
        line.split("==")
        for line in CONSTRAINTS.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    )
    assert pins, "no pins in .github/constraints-min.txt"
    for name, version in pins.items():
        floor = floors.get(name)
        assert floor == version, f"{name}: pinned {version}, pyproject.toml has >={floor}"
    for name in ("jax", "jaxlib", "optax", "chex", "flax", "orbax-checkpoint"):
        assert name in pins, f"{name} has no pinned floor"
