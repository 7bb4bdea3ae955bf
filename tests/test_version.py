"""The version is single-sourced: `fromage_optax.__version__` is what the package metadata says."""

import importlib.metadata
import re
from pathlib import Path

import pytest

import fromage_optax


def test_version_matches_the_installed_metadata():
    installed = importlib.metadata.version("fromage_optax")
    assert installed == fromage_optax.__version__, (
        f"metadata {installed} != fromage_optax.__version__ {fromage_optax.__version__}: "
        "reinstall (pip install -e .) after changing __version__"
    )


def test_version_is_a_release_number():
    release = r"\d+\.\d+\.\d+((a|b|rc)\d+)?(\.post\d+)?(\.dev\d+)?"
    assert re.fullmatch(release, fromage_optax.__version__), fromage_optax.__version__


def test_citation_names_the_same_version():
    """CITATION.cff repeats the version (the citation format has no way to point at it)."""
    citation = Path(__file__).resolve().parents[1] / "CITATION.cff"
    if not citation.exists():  # tests run against an installed wheel, away from the checkout
        pytest.skip("no CITATION.cff beside the tests")
    versions = re.findall(r"^version: *(\S+)$", citation.read_text(), flags=re.MULTILINE)
    assert versions == [fromage_optax.__version__]
