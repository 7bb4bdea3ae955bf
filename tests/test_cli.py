"""benchmarks/cli.py: one flag per preset field, overriding it the same way everywhere."""

import dataclasses

import pytest

from benchmarks import cli


@dataclasses.dataclass(frozen=True)
class Config:
    epochs: int
    sizes: tuple[int, ...]
    bounds: tuple[float | None, ...] = (None,)
    name: str = dataclasses.field(default="a", metadata={"choices": ("a", "b")})
    names: tuple[str, ...] = dataclasses.field(
        default=("a",), metadata={"choices": ("a", "a, at the bound", "b")}
    )
    rate: float | None = dataclasses.field(default=None, metadata={"aliases": ("--lr",)})
    scan: bool = False
    table: dict = dataclasses.field(default_factory=dict, metadata={"flag": False})
    preset: str = dataclasses.field(default="", metadata={"flag": False})

    def __post_init__(self):
        if self.epochs < 0:
            raise ValueError("--epochs must be at least 0")


PRESETS = {"small": Config(epochs=1, sizes=(2,)), "big": Config(epochs=9, sizes=(8, 8))}


def parse(argv):
    parser = cli.preset_parser("benchmarks.example", None, PRESETS, default="small")
    return cli.config_from_args(parser, parser.parse_args(argv), PRESETS)


def test_flags_override_preset_fields():
    assert parse([]) == dataclasses.replace(PRESETS["small"], preset="small")
    config = parse(["--preset", "big", "--sizes", "1,2", "3", "--bounds", "none,2", "--lr", "0.5"])
    assert (config.epochs, config.sizes, config.bounds, config.rate) == (
        9,
        (1, 2, 3),
        (None, 2.0),
        0.5,
    )
    assert config.preset == "big" and parse(["--scan"]).scan is True
    assert parse(["--rate", "none"]).rate is None


def test_a_choice_whose_name_holds_a_comma_is_one_value():
    assert parse(["--names", "a,a, at the bound,b"]).names == ("a", "a, at the bound", "b")
    assert parse(["--names", "a, at the bound", "a"]).names == ("a, at the bound", "a")
    assert parse(["--names", "b, a"]).names == ("b", "a")


@pytest.mark.parametrize(
    "argv",
    [
        ["--name", "c"],
        ["--names", "a, at the"],
        ["--epochs", "-1"],
        ["--sizes", "x"],
        ["--table", "1"],
    ],
)
def test_bad_flags_are_command_line_errors(argv):
    with pytest.raises(SystemExit):
        parse(argv)


def test_from_json_restores_tuples():
    saved = {"epochs": 2, "sizes": [1, 2], "bounds": [None], "unknown": 1}
    assert cli.from_json(Config, saved) == Config(epochs=2, sizes=(1, 2))
