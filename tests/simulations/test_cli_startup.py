"""`fedrec --help`, and every command's, loads no torch, Opacus, Flower, Ray or pandas.

One fresh interpreter walks the whole parser tree (new commands are covered
without touching this file) through :func:`simulations.cli.main`, as the
``fedrec`` entry point does, then reports what it imported.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
HEAVY = ("torch", "opacus", "flwr", "ray", "pandas", "matplotlib")
WALK = """
import contextlib, io, json, sys
from simulations.cli import build_parser, command_paths, main

helps = {}
for path in [(), *command_paths(build_parser())]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        try:
            main([*path, "--help"])
            code = None  # --help must exit
        except SystemExit as stop:
            code = stop.code
    helps[" ".join(path)] = {"code": code, "usage": out.getvalue().startswith("usage: fedrec")}
loaded = sorted({name.split(".")[0] for name in sys.modules})
print(json.dumps({"helps": helps, "loaded": loaded}))
"""


def test_every_help_exits_zero_without_a_heavy_import() -> None:
    # Execute
    done = subprocess.run(
        [sys.executable, "-c", WALK], cwd=REPO, capture_output=True, text=True, check=True
    )
    report = json.loads(done.stdout)
    # Assert
    helps = report["helps"]
    assert {"", "simulate", "coordinator init", "merchant join", "audit epsilon"} <= set(helps)
    assert len(helps) >= 20  # the walk reached the sub-commands
    assert {name: h for name, h in helps.items() if h != {"code": 0, "usage": True}} == {}
    assert [name for name in HEAVY if name in report["loaded"]] == []
