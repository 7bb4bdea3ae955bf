"""README.md and docs/ cannot drift: one source for each text, tables from the committed JSON,
examples and commands that run.

- README.md is a front page (≤ 250 lines) and no paragraph of three or more lines stands both in it
  and in docs/.
- Every Markdown table under docs/results/ equals what its experiment's report writes from the
  committed JSON beside it, and README's headline table equals the one built from the JSON it names.
- Every ```python block of README.md and docs/ runs (the blocks of one page in order, in one
  namespace that starts with the usual imports), unless an HTML comment ``<!-- skip: reason -->``
  stands just before it.
- Every ``python -m benchmarks.…`` command shown runs at smoke size: the command as shown, with
  ``--out`` sent to a temporary folder and a few flags appended that shrink steps, epochs or seeds
  (model sizes stay). A command whose preset reads ``--data-dir`` must refuse a missing folder
  with the documented ``FileNotFoundError``.
"""

from __future__ import annotations

import importlib
import re
import shlex
from pathlib import Path

import pytest

from benchmarks import docs_tables

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = ROOT / "docs"


def _doc_pages() -> list[Path]:
    """docs/ pages written by hand (results/ holds generated tables, _build/ the site)."""
    return sorted(
        p for p in DOCS.rglob("*.md") if not {"results", "_build"} & set(p.relative_to(DOCS).parts)
    )


PAGES = [README, *_doc_pages()]


def _name(path: Path) -> str:
    return str(path.relative_to(ROOT))


# ---------------------------------------------------------------------------------------------
# One source


def test_readme_is_a_front_page():
    assert len(README.read_text().splitlines()) <= 250


def _windows(text: str, size: int = 3) -> set[str]:
    """Every run of `size` consecutive lines inside one paragraph (whitespace normalised)."""
    windows = set()
    for paragraph in re.split(r"\n\s*\n", text):
        lines = [" ".join(line.split()) for line in paragraph.splitlines()]
        lines = [line for line in lines if line]
        windows.update("\n".join(lines[i : i + size]) for i in range(len(lines) - size + 1))
    return windows


def test_no_paragraph_stands_in_both_readme_and_docs():
    readme = _windows(README.read_text())
    shared = {
        _name(page): sorted(readme & _windows(page.read_text()))
        for page in _doc_pages()
        if readme & _windows(page.read_text())
    }
    assert not shared, f"text in both README.md and docs/ (keep it in docs/ only): {shared}"


# ---------------------------------------------------------------------------------------------
# Numbers from the runs


def test_every_results_table_is_what_its_report_writes_from_the_json():
    stale = [
        str(path.relative_to(ROOT))
        for path, text in docs_tables.tables().items()
        if not path.exists() or path.read_text() != text
    ]
    assert not stale, f"rebuild with `python -m benchmarks.docs_tables`: {stale}"


def test_every_results_table_is_included_by_a_page():
    pages = "\n".join(page.read_text() for page in _doc_pages())
    included = {
        (page.parent / target).resolve()
        for page in _doc_pages()
        for target in re.findall(r"```\{include\} (\S+)", page.read_text())
    }
    tables = {p.resolve() for p in docs_tables.tables()} - {docs_tables.RESULTS / "headline.md"}
    assert "{include}" in pages
    missing = sorted(str(p.relative_to(ROOT)) for p in tables - included)
    # Design history and single-run evidence: their JSON is linked, not shown.
    unshown = ("step_speed/compile", "lecun_init", "gpt2_init")
    assert all(any(part in p for part in unshown) for p in missing), missing


def _headline_table(text: str) -> str:
    start = text.index("| experiment | claim | measured |")
    end = text.index("\n\n", start)
    return text[start:end] + "\n"


def test_readme_headline_table_is_built_from_the_json_it_names():
    table = _headline_table(README.read_text())
    assert table == docs_tables.headline(), "rebuild with `python -m benchmarks.docs_tables`"
    rows = table.splitlines()[2:]
    assert len(rows) >= 6
    for row in rows:
        named = re.findall(r"\]\((docs/results/[^)]+\.json)\)", row)
        assert named and all((ROOT / path).is_file() for path in named), row
        pages = re.findall(r"\]\((docs/experiments/[^)]+\.md)\)", row)
        assert pages and all((ROOT / page).is_file() for page in pages), row


# ---------------------------------------------------------------------------------------------
# Examples that run

_FENCE = re.compile(
    r"^(?P<skip><!-- skip: (?P<reason>.+?) -->\n)?```python\n(?P<code>.*?)^```", re.M | re.S
)
_PRELUDE = "import functools, jax, jax.numpy as jnp, optax, fromage_optax\n"


def _python_blocks(page: Path) -> list[tuple[str, str | None]]:
    return [(m["code"], m["reason"]) for m in _FENCE.finditer(page.read_text())]


@pytest.mark.parametrize("page", [p for p in PAGES if _python_blocks(p)], ids=lambda p: _name(p))
def test_python_blocks_run(page):
    namespace: dict = {"__name__": f"docs_{page.stem}"}
    exec(_PRELUDE, namespace)
    skipped = []
    for index, (code, reason) in enumerate(_python_blocks(page)):
        if reason:
            skipped.append(f"block {index}: {reason}")
            continue
        exec(compile(code, f"{_name(page)} (python block {index})", "exec"), namespace)
    if skipped:
        print("skipped:", *skipped, sep="\n  ")


# ---------------------------------------------------------------------------------------------
# Commands that run

# Appended to each command (argparse keeps a flag's last value): fewer steps, epochs, seeds and
# settings, the same models.
_SMOKE = {
    "benchmarks.mlp_linen": ["--epochs", "1"],
    "benchmarks.mlp_nnx": ["--epochs", "1"],
    "benchmarks.depth": ["--epochs", "1", "--depths", "2", "--seeds", "0"],
    # Depth 32, width 64 as in the preset; one optimiser, two seeds vmapped.
    "benchmarks.depth.signal": [
        "--epochs", "1", "--probe-epochs", "0,1", "--seeds", "0,1", "--optimizers", "fromage",
    ],  # fmt: skip
    # The preset's model (its embedding over the library's size threshold) on a prefix of the
    # training words, one setting per optimiser.
    "benchmarks.word_lm": [
        "--epochs", "1", "--decay-after-epoch", "1", "--seeds", "0", "--train-words", "8000",
        "--fromage-p-bounds", "1", "--adam-learning-rates", "0.001", "--sgd-learning-rates", "1",
    ],  # fmt: skip
    "benchmarks.transformer": [
        "--steps",
        "2",
        "--warmup-steps",
        "1",
        "--eval-interval",
        "2",
        "--max-eval-batches",
        "1",
        "--max-train-eval-batches",
        "1",
        "--seeds",
        "0",
    ],  # fmt: skip
    "benchmarks.gan": [
        "--steps",
        "2",
        "--eval-every",
        "2",
        "--classifier-epochs",
        "1",
        "--seeds",
        "0",
        "--lr-factors",
        "1",
        "--eval-samples-per-class",
        "10",
    ],  # fmt: skip
    "benchmarks.step_speed": [
        "--repeats",
        "1",
        "--dtypes",
        "float32",
        "--trees",
        "gpt",
        "--no-train-steps",
    ],  # fmt: skip
    "benchmarks.docs_tables": ["--check"],
    "benchmarks.step_speed.against_commit": [
        "--preset", "quick", "--trees", "few_large", "--repeats", "2",
    ],  # fmt: skip
}
# Per preset, where its size is not in the flags above.
_SMOKE_PRESET = {
    ("benchmarks.transformer", "cpu"): [
        "--fromage-learning-rates",
        "0.01",
        "--fromage-p-bounds",
        "none",
        "--adamw-learning-rates",
        "0.001",
        "--sgd-learning-rates",
        "0.1",
        "--optax-fromage-learning-rates",
        "0.01",
        "--fromage-schedules",
        "constant",
        "--fromage-momenta",
        "none",
    ],  # fmt: skip
    ("benchmarks.step_speed", "cpu"): [],
    # No robustness variant (each compiles a step of its own at the preset's size; the
    # variants' bookkeeping is test_gan's).
    ("benchmarks.gan", "cpu"): ["--variants", ""],
}
_SKIP = {
    "benchmarks.multihost": "several processes: tests/test_multihost.py runs the launcher",
    "--preset quick": "tests/test_<experiment>.py runs every quick preset end to end",
    "--preset long": "pieces of minutes each: tests/test_depth_long.py runs the machinery",
}
_PLACEHOLDER = re.compile(r"\b(HOST\d*:PORT|DIR)\b|<\w+>")


def _shell_commands(text: str) -> list[str]:
    """The `python -m benchmarks.…` commands of the bash blocks and inline code of `text`,
    continuation lines joined and shell variables defined in the same block expanded."""
    commands = []
    for block in re.findall(r"^```(?:bash|sh|console)\n(.*?)^```", text, re.M | re.S):
        block = block.replace("\\\n", " ")
        variables = dict(re.findall(r'^(\w+)="([^"]*)"', block, re.M))
        for line in block.splitlines():
            for name, value in variables.items():
                line = line.replace(f"${name}", value)
            commands += re.findall(r"(python -m benchmarks\.[^&#\n]*)", line)
    for span in re.findall(r"`(python -m benchmarks\.[^`]+)`", text.replace("\n", " ")):
        commands.append(span)
    return [" ".join(c.split()) for c in commands if "<" not in c]


def _commands() -> list[str]:
    return sorted({c for page in PAGES for c in _shell_commands(page.read_text())})


def _main(module: str):
    try:
        return importlib.import_module(module + ".__main__").main
    except ModuleNotFoundError:
        return importlib.import_module(module).main


_SMOKE_OPTIMIZERS = {
    "benchmarks.step_speed": "optax.sgd,fromage",
    "benchmarks.transformer": "fromage",
    "benchmarks.word_lm": "fromage",
    "benchmarks.gan": "fromage",
}


def _smoke_argv(module: str, argv: list[str], out: Path) -> list[str]:
    argv = list(argv)
    if "--out" in argv:
        argv[argv.index("--out") + 1] = str(out)
    elif module != "benchmarks.docs_tables":
        argv += ["--out", str(out)]
    preset = argv[argv.index("--preset") + 1] if "--preset" in argv else None
    extra = _SMOKE.get(module, [])
    if "--runs" not in argv:  # the runs named must stay in the grid
        extra = extra + _SMOKE_PRESET.get((module, preset), [])
    # One optimiser where the command names none: the model, data and loop are the same for
    # each (the recipe's command names its own, and runs them).
    if "--optimizers" not in argv and module in _SMOKE_OPTIMIZERS:
        extra += ["--optimizers", _SMOKE_OPTIMIZERS[module]]
    return argv + extra


@pytest.mark.parametrize("command", _commands())
def test_command_runs_at_smoke_size(command, tmp_path, monkeypatch):
    words = shlex.split(command)
    module, argv = words[2], words[3:]
    for key, reason in _SKIP.items():
        if key == module or key in command:
            pytest.skip(reason)
    if "--data-dir" in argv:
        missing = tmp_path / "no_data_here"
        argv[argv.index("--data-dir") + 1] = str(missing)
        with pytest.raises(FileNotFoundError, match="no_data_here"):
            _main(module)(_smoke_argv(module, argv, tmp_path / "out"))
        return
    if _PLACEHOLDER.search(command):
        pytest.skip(f"placeholders to fill in: {command}")
    monkeypatch.chdir(ROOT)
    _main(module)(_smoke_argv(module, argv, tmp_path / "out"))


def test_every_command_is_found():
    modules = {shlex.split(c)[2] for c in _commands()}
    assert {"benchmarks.mlp_linen", "benchmarks.depth", "benchmarks.word_lm"} <= modules
    assert {"benchmarks.transformer", "benchmarks.gan", "benchmarks.step_speed"} <= modules
