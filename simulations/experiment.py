"""Experiments as files: one TOML file says what to simulate, and over which grid.

    [experiment]                 # name, seeds, baselines, cpus, ray-address
    seeds = [0, 1]
    [data]                       # path + format, or the synthetic federation's knobs
    users = 4000
    [partition]                  # scheme (auto|natural|iid|dirichlet|device), merchants, alpha
    scheme = "dirichlet"
    [privacy]                    # epsilon (a number, or "off"), delta, unit, accountant
    epsilon = 3
    [run]                        # any run setting by its key, as `fedrec simulate --set`
    num-server-rounds = 10
    [sweep]                      # axes: "SECTION.KEY" = [values]; every combination is a cell
    "privacy.epsilon" = [1, 3, "off"]

A file is parsed and every cell of its grid resolved (for every seed) before
anything runs, so a bad value anywhere is an error naming the file, the key
and the cell, and nothing is written. The seed of a run sets the training
seed, the partition seed and the synthetic data's seed, unless ``[data] seed``
or ``[partition] seed`` fix them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common.choices import PARTITION_SCHEMES
from common.config import RunConfig, parse_run_config
from common.data.formats import DEFAULT_FORMAT
from common.data.partition import PartitionConfig
from common.errors import ConfigError
from common.recipes import run_settings
from simulations.synthetic import SyntheticSpec

SECTIONS = ("experiment", "data", "partition", "privacy", "run", "sweep")
EXPERIMENT_KEYS = ("name", "description", "seeds", "baselines", "cpus", "ray-address")
DATA_FILE_KEYS = ("path", "format")
# Synthetic federation knobs: SyntheticSpec fields in kebab case, "num-" dropped.
SYNTHETIC_KEYS = {
    f.name.removeprefix("num_").replace("_", "-"): f.name for f in dataclasses.fields(SyntheticSpec)
}
PARTITION_KEYS = ("scheme", "merchants", "alpha", "seed")
PRIVACY_KEYS = ("epsilon", "delta", "unit", "accountant")
OFF = "off"


@dataclass(frozen=True)
class Axis:
    """One swept setting: ``key`` is ``SECTION.KEY`` as written in ``[sweep]``."""

    key: str
    values: tuple[Any, ...]

    @property
    def section(self) -> str:
        return self.key.split(".", 1)[0]

    @property
    def name(self) -> str:
        return self.key.split(".", 1)[1]


@dataclass(frozen=True)
class Cell:
    """One point of the grid: a value for every axis (none for a plain run)."""

    id: str
    values: tuple[tuple[str, Any], ...]  # (axis key, value)

    def label(self) -> str:
        return ", ".join(f"{k.split('.', 1)[1]}={v}" for k, v in self.values) or "base"


@dataclass(frozen=True)
class Experiment:
    path: Path
    text: str  # the file as given: stored with the results, and its digest guards resumes
    name: str
    description: str
    seeds: tuple[int, ...]
    sections: Mapping[str, Mapping[str, Any]]  # data, partition, privacy, run
    axes: tuple[Axis, ...]
    baselines: bool
    cpus: int
    ray_address: str

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.text.encode()).hexdigest()


@dataclass(frozen=True)
class ResolvedRun:
    """Everything one run of one cell needs, parsed and validated."""

    run: RunConfig
    data: Mapping[str, Any]  # {"path", "format"} or {"synthetic": SyntheticSpec}
    partition_scheme: str  # may be "auto": decided once the data is loaded
    partition: PartitionConfig
    privacy_label: str


def _where(path: Path, section: str, key: str = "") -> str:
    return f"{path}: [{section}]" + (f" {key}" if key else "")


def _check_keys(path: Path, section: str, table: Mapping[str, Any], known: Any) -> None:
    unknown = sorted(set(table) - set(known))
    if unknown:
        raise ConfigError(
            f"{_where(path, section)}: unknown key(s) {', '.join(unknown)}; "
            f"expected one of {', '.join(sorted(known))}."
        )


def _seeds(path: Path, raw: Any) -> tuple[int, ...]:
    values = raw if isinstance(raw, list) else [raw]
    if not values or not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        raise ConfigError(
            f"{_where(path, 'experiment', 'seeds')}: expected a list of integers, got {raw!r}."
        )
    if len(set(values)) != len(values):
        raise ConfigError(f"{_where(path, 'experiment', 'seeds')}: repeated seeds in {raw!r}.")
    return tuple(values)


def _axes(path: Path, table: Mapping[str, Any]) -> tuple[Axis, ...]:
    axes = []
    for key, values in table.items():
        if isinstance(values, dict):
            raise ConfigError(
                f"{_where(path, 'sweep', key)}: expected a list of values; quote dotted keys "
                f'("{key}.KEY" = [...]) so TOML does not read them as tables.'
            )
        section, dot, name = key.partition(".")
        if not dot or section not in ("data", "partition", "privacy", "run") or not name:
            raise ConfigError(
                f"{_where(path, 'sweep', key)}: an axis is named SECTION.KEY with SECTION one of "
                f'data, partition, privacy, run (e.g. "privacy.epsilon"), got {key!r}.'
            )
        if not isinstance(values, list) or not values:
            raise ConfigError(
                f"{_where(path, 'sweep', key)}: expected a non-empty list, got {values!r}."
            )
        if len({repr(v) for v in values}) != len(values):
            raise ConfigError(f"{_where(path, 'sweep', key)}: repeated values in {values!r}.")
        axes.append(Axis(key=key, values=tuple(values)))
    names = [a.name for a in axes]
    if len(set(names)) != len(names):
        raise ConfigError(f"{_where(path, 'sweep')}: two axes end in the same key: {names}.")
    return tuple(axes)


def _slug(value: Any) -> str:
    return re.sub(r"[^A-Za-z0-9.+-]+", "-", str(value)).strip("-") or "x"


def cells(experiment: Experiment) -> list[Cell]:
    """The grid in file order (the last axis varies fastest); a plain run has one cell."""
    if not experiment.axes:
        return [Cell(id="base", values=())]
    out = []
    for combo in itertools.product(*(axis.values for axis in experiment.axes)):
        values = tuple((axis.key, v) for axis, v in zip(experiment.axes, combo, strict=True))
        cell_id = "_".join(f"{k.split('.', 1)[1]}={_slug(v)}" for k, v in values)
        if len(cell_id) > 80:
            cell_id = cell_id[:60] + "-" + hashlib.sha256(cell_id.encode()).hexdigest()[:12]
        out.append(Cell(id=cell_id, values=values))
    return out


def load_experiment(path: Path, *, text: str | None = None) -> Experiment:
    """Parse and check ``path``; every cell is resolved once here, so errors come first."""
    if text is None:
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError as exc:
            raise ConfigError(f"Experiment file {path} does not exist.") from exc
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}.") from exc
    _check_keys(path, "top level", raw, SECTIONS)
    for section in SECTIONS:
        if section in raw and not isinstance(raw[section], dict):
            raise ConfigError(f"{path}: {section} must be a table ([{section}]).")
    head = raw.get("experiment", {})
    _check_keys(path, "experiment", head, EXPERIMENT_KEYS)
    for key, kind in (("baselines", bool), ("cpus", int), ("ray-address", str), ("name", str)):
        if key in head and not isinstance(head[key], kind):
            raise ConfigError(
                f"{_where(path, 'experiment', key)}: expected a {kind.__name__}, got {head[key]!r}."
            )
    experiment = Experiment(
        path=path,
        text=text,
        name=str(head.get("name", path.stem)),
        description=str(head.get("description", "")),
        seeds=_seeds(path, head.get("seeds", [0])),
        sections={s: dict(raw.get(s, {})) for s in ("data", "partition", "privacy", "run")},
        axes=_axes(path, raw.get("sweep", {})),
        baselines=bool(head.get("baselines", True)),
        cpus=int(head.get("cpus", 0)),
        ray_address=str(head.get("ray-address", "")),
    )
    if experiment.cpus < 0:
        raise ConfigError(f"{_where(path, 'experiment', 'cpus')}: must be >= 0 (0 = all cores).")
    for cell in cells(experiment):
        for seed in experiment.seeds:
            resolve(experiment, cell, seed)
    return experiment


def _privacy(path: Path, table: Mapping[str, Any], where: str) -> dict[str, Any]:
    """``[privacy]`` as run settings; a number for epsilon turns DP on, like ``--epsilon``."""
    epsilon = table.get("epsilon", OFF)
    out: dict[str, Any] = {}
    if isinstance(epsilon, str) and epsilon.strip().lower() in (OFF, "inf", "none"):
        epsilon = None  # no DP: a unit named for the private cells does not apply
    elif isinstance(epsilon, bool) or not isinstance(epsilon, (int, float)) or not epsilon > 0:
        raise ConfigError(f'{where}: epsilon must be a number > 0 or "off", got {epsilon!r}.')
    unit = table.get("unit")
    if epsilon is not None:
        out["target-epsilon"] = float(epsilon)
        out["privacy-unit"] = unit or "user"
    else:
        out["privacy-unit"] = OFF
    if "delta" in table:
        out["target-delta"] = table["delta"]
    if "accountant" in table:
        out["accountant"] = table["accountant"]
    return out


def _describe_privacy(run: RunConfig) -> str:
    if not run.privacy.enabled:
        return "no DP"
    return (
        f"{run.privacy.unit}-level DP, epsilon {run.privacy.target_epsilon:g} at delta "
        f"{run.privacy.delta:g} ({run.privacy.accountant.upper()})"
    )


def resolve(experiment: Experiment, cell: Cell, seed: int) -> ResolvedRun:
    """The base sections with the cell's axis values, for ``seed``: parsed and validated."""
    sections = {name: dict(table) for name, table in experiment.sections.items()}
    for key, value in cell.values:
        section, _, name = key.partition(".")
        sections[section][name] = value
    path = experiment.path
    where = f"{path}: cell {cell.label()}, seed {seed}" if cell.values else f"{path}: seed {seed}"
    _check_keys(path, "data", sections["data"], (*DATA_FILE_KEYS, *SYNTHETIC_KEYS))
    _check_keys(path, "partition", sections["partition"], PARTITION_KEYS)
    _check_keys(path, "privacy", sections["privacy"], PRIVACY_KEYS)
    try:
        privacy = _privacy(path, sections["privacy"], f"{where}: [privacy]")
        raw = run_settings(sections["run"], privacy, real_log="path" in sections["data"])
        raw.setdefault("seed", seed)
        raw.setdefault("evaluate-every", 1)  # accuracy against rounds, by default
        run = parse_run_config(raw)
        data_table = sections["data"]
        data: dict[str, Any]
        if "path" in data_table:
            stray = sorted(set(data_table) - set(DATA_FILE_KEYS))
            if stray:
                raise ConfigError(
                    f"[data] has a path and synthetic keys ({', '.join(stray)}); "
                    "use one or the other."
                )
            data_path = Path(str(data_table["path"])).expanduser()
            if not data_path.is_absolute():  # relative to the experiment file, not the caller
                data_path = experiment.path.parent / data_path
            data = {"path": str(data_path), "format": str(data_table.get("format", DEFAULT_FORMAT))}
        else:
            fields = {SYNTHETIC_KEYS[k]: v for k, v in data_table.items() if k != "format"}
            fields.setdefault("seed", seed)
            if "event_mix" in fields:
                fields["event_mix"] = tuple(fields["event_mix"])
            data = {"synthetic": SyntheticSpec(**fields)}
        part = sections["partition"]
        scheme = str(part.get("scheme", "auto"))
        if scheme not in ("auto", *PARTITION_SCHEMES):
            raise ConfigError(
                f"[partition] scheme must be auto or one of {', '.join(PARTITION_SCHEMES)}, "
                f"got {scheme!r}."
            )
        merchants = part.get("merchants", data_table.get("merchants", 10))
        partition = PartitionConfig(
            scheme="natural" if scheme == "auto" else scheme,
            num_parties=int(merchants),
            alpha=float(part.get("alpha", 0.5)),
            seed=int(part.get("seed", seed)),
        )
    except ConfigError as exc:
        message = str(exc)
        raise ConfigError(
            message if message.startswith(str(path)) else f"{where}: {message}"
        ) from exc
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: {exc}.") from exc
    return ResolvedRun(
        run=run,
        data=data,
        partition_scheme=scheme,
        partition=partition,
        privacy_label=_describe_privacy(run),
    )
