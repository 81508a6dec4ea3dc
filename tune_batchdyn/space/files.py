"""Finding and reading search-space files (``searchspaces/*.toml``).

The top-level ``searchspaces/`` folder is installed as package data of
``tune_batchdyn.searchspaces`` (``[tool.setuptools] package-dir`` in pyproject.toml), so a wheel
install carries it; a source checkout or an editable install reads the folder itself.

TOML is read with the standard library's ``tomllib``, which exists from Python 3.11 on. The
package supports Python 3.10 for everything else; reading a space there raises ``ConfigError``
saying so (no third-party TOML reader is among the project's dependencies).
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

from tune_batchdyn.errors import ConfigError

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = None

#: The package the shipped spaces are installed as (data only: the folder has no __init__.py).
SEARCHSPACES_PACKAGE = "tune_batchdyn.searchspaces"
_SOURCE_TREE_DIR = Path(__file__).resolve().parents[2] / "searchspaces"


def _installed_dir() -> Path | None:
    """The folder of the installed ``tune_batchdyn.searchspaces`` package data, if importable.

    Without an ``__init__.py`` the folder imports as a namespace package, whose
    ``resources.files`` is a ``MultiplexedPath`` (one folder here) listing plain paths.
    """
    try:
        root = resources.files(SEARCHSPACES_PACKAGE)
    except ModuleNotFoundError:
        return None
    if isinstance(root, Path):
        return root
    return next((entry.parent for entry in root.iterdir() if isinstance(entry, Path)), None)


#: The shipped spaces: the installed package data, else ``searchspaces/`` of the source tree.
SEARCHSPACES_DIR = _installed_dir() or _SOURCE_TREE_DIR


def shipped_spaces() -> dict[str, Path]:
    """Name (file stem) -> path of every shipped ``searchspaces/*.toml``."""
    if not SEARCHSPACES_DIR.is_dir():
        return {}
    return {p.stem: p for p in sorted(SEARCHSPACES_DIR.glob("*.toml"))}


def resolve_space_path(space: str | Path) -> Path:
    """A path to an existing file, or the name of a shipped space (``"digits_mlp"``)."""
    path = Path(space)
    if path.is_file():
        return path
    shipped = shipped_spaces()
    name = path.stem if path.suffix == ".toml" and path.parent == Path(".") else str(space)
    if name in shipped:
        return shipped[name]
    raise ConfigError(f"search space {str(space)!r} is not a file nor a shipped space; use a "
                      f"path to a .toml file or one of: {', '.join(shipped) or '(none found)'}.")


def read_toml(path: Path) -> dict[str, Any]:
    """The parsed TOML document; ``ConfigError`` naming the file for any problem."""
    if tomllib is None:
        raise ConfigError(f"{path}: reading a search-space file needs Python 3.11 or newer "
                          "(the standard library's tomllib); this interpreter has no tomllib. "
                          "Use Python 3.11+, or build the space in code.")
    try:
        with open(path, "rb") as handle:
            return tomllib.load(handle)
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path}: not valid TOML: {err}.") from err
    except OSError as err:
        raise ConfigError(f"{path}: cannot be read: {err}.") from err
