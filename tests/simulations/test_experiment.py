"""Experiment files: parsing, errors that name file/key/cell, the grid and its resolution."""

from __future__ import annotations

from pathlib import Path

import pytest

from common.errors import ConfigError
from simulations.experiment import cells, load_experiment, resolve

GRID = """
[experiment]
name = "grid"
seeds = [0, 1]

[data]
users = 300
items = 100
merchants = 3

[privacy]
delta = 1e-5

[run]
num-server-rounds = 3

[sweep]
"privacy.epsilon" = [1, 4, "off"]
"partition.alpha" = [0.1, 1.0]
"run.model" = ["mf", "neumf"]
"""


def _write(tmp_path: Path, text: str, name: str = "exp.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_a_grid_is_every_combination_in_file_order(tmp_path: Path) -> None:
    experiment = load_experiment(_write(tmp_path, GRID))
    grid = cells(experiment)
    assert len(grid) == 12 and len({c.id for c in grid}) == 12
    assert grid[0].id == "epsilon=1_alpha=0.1_model=mf"
    assert grid[1].id == "epsilon=1_alpha=0.1_model=neumf"
    assert grid[-1].label() == "epsilon=off, alpha=1.0, model=neumf"
    assert experiment.seeds == (0, 1)


def test_a_cell_resolves_to_the_settings_a_researcher_would_get_from_the_cli(
    tmp_path: Path,
) -> None:
    experiment = load_experiment(_write(tmp_path, GRID))
    grid = cells(experiment)
    private = resolve(experiment, grid[0], seed=1)
    assert private.run.privacy.unit == "user" and private.run.privacy.target_epsilon == 1.0
    assert private.run.privacy.delta == 1e-5
    assert private.run.model.embedding_dim == 16  # DP-SGD's tuned defaults beneath
    assert private.run.federation.num_rounds == 3  # ... and explicit settings above them
    assert private.run.federation.seed == 1 and private.partition.seed == 1
    assert private.data["synthetic"].seed == 1 and private.data["synthetic"].num_users == 300
    assert private.partition.alpha == 0.1 and private.partition.num_parties == 3
    assert private.run.federation.evaluate_every == 1  # accuracy against rounds by default
    assert "epsilon 1 at delta 1e-05 (RDP)" in private.privacy_label
    plain = resolve(experiment, grid[-1], seed=0)
    assert not plain.run.privacy.enabled and plain.run.model.kind == "neumf"
    assert plain.run.model.embedding_dim == 32  # no DP: the plain defaults


def test_a_file_path_is_relative_to_the_experiment_file(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    path = _write(tmp_path / "sub", '[data]\npath = "events.csv"\n[experiment]\nseeds = [3]\n')
    resolved = resolve(load_experiment(path), cells(load_experiment(path))[0], seed=3)
    assert resolved.data == {"path": str(tmp_path / "sub" / "events.csv"), "format": "csv"}
    assert resolved.partition_scheme == "auto"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[run]\nnum-server-rounds = \n", "not valid TOML: .*line 2"),
        ("[runs]\nx = 1\n", r"\[top level\]: unknown key\(s\) runs"),
        ("[data]\nuserz = 3\n", r"\[data\]: unknown key\(s\) userz"),
        ("[experiment]\nseeds = [1, 1]\n", "repeated seeds"),
        ("[experiment]\nseeds = ['a']\n", "expected a list of integers"),
        ("[sweep]\nepsilon = [1, 2]\n", 'named SECTION.KEY .*"privacy.epsilon"'),
        ("[sweep]\nprivacy.epsilon = [1, 2]\n", "quote dotted keys"),
        ('[sweep]\n"run.model" = []\n', "non-empty list"),
        (
            "[privacy]\nepsilon = -1\n",
            r'seed 0: \[privacy\]: epsilon must be a number > 0 or "off"',
        ),
        ("[run]\nnum-server-rounds = 0\n", "seed 0: Invalid federation settings"),
        ('[sweep]\n"run.model" = ["mf", "tree"]\n', "cell model=tree, seed 0: .*model"),
        ('[sweep]\n"partition.alpha" = [0.5, -1]\n', "cell alpha=-1, seed 0: Dirichlet alpha"),
        ("[data]\npath = 'x.csv'\nusers = 3\n", "a path and synthetic keys"),
        ("[partition]\nscheme = 'random'\n", "scheme must be auto or one of"),
    ],
)
def test_bad_files_are_refused_with_file_key_and_cell(
    tmp_path: Path, text: str, expected: str
) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError, match=expected) as error:
        load_experiment(path)
    assert str(path) in str(error.value)


def test_a_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_experiment(tmp_path / "nope.toml")
