"""The format registry is the one list: every name resolves to a reader, the CLIs list them."""

from __future__ import annotations

import subprocess
import sys

from common.data.formats import DATA_FORMATS, DEFAULT_FORMAT, FORMATS, format_help, format_reader


def test_every_registered_format_has_a_reader() -> None:
    for name in DATA_FORMATS:
        assert callable(format_reader(name).read), name
    assert DEFAULT_FORMAT in FORMATS


def test_the_cli_help_lists_the_registry() -> None:
    assert format_help() == (
        "csv, parquet, movielens-100k, movielens-1m or movielens-latest (default: csv)"
    )


def test_the_registry_imports_nothing_heavy() -> None:
    code = (
        "import sys, common.data.formats; "
        "print(sorted(m for m in ('numpy', 'pandas', 'pyarrow') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
