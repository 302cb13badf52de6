"""The folders a wheel carries beside the code: the page and the demo channels.

In the source tree they are at the top, ``web/`` and ``schemas/``; pyproject.toml maps
them into the package (``[tool.setuptools.package-dir]``: ``speeddata.web`` and
``speeddata.demo_channels``, the demo schemas listed by name), so an installed wheel has
them under ``speeddata/`` and ``importlib.resources`` finds them there. Neither folder
has an ``__init__.py`` (``schemas/`` is also the user's channels directory of a
checkout), which makes them namespace packages: an editable install cannot import those
from a mapped folder, and a checkout on ``PYTHONPATH`` has no ``speeddata/web`` at all.
So a speeddata running from a source tree takes that tree's folders, and never the ones
an editable install of another checkout maps (a worktree would serve main's page).
"""

from __future__ import annotations

from pathlib import Path

SOURCE_TREE = Path(__file__).resolve().parents[1]
"""The folder above ``speeddata/``: a checkout when it holds pyproject.toml."""


def folder(package: str, source: str) -> Path:
    """The folder of ``package`` (``speeddata.web``), which the source tree has as its
    top-level ``source`` (``web``)."""
    if (SOURCE_TREE / "pyproject.toml").is_file() and (SOURCE_TREE / source).is_dir():
        return SOURCE_TREE / source
    from importlib import resources

    found = resources.files(package)
    if isinstance(found, Path):
        return found
    # a namespace package: a MultiplexedPath over its folders, of which a wheel has one
    folders = {Path(str(child)).parent for child in found.iterdir()}
    if len(folders) != 1:
        raise RuntimeError(f"{package}: expected one folder, found {sorted(folders)}")
    return folders.pop()


def web_dir() -> Path:
    """The page: index.html, channels.html, exports.html, css/ and js/."""
    return folder("speeddata.web", "web")


def demo_dir() -> Path:
    """The demo channels' schemas (in a checkout, ``schemas/``, which holds the user's own
    channels too: take the demo ones by name, ``schemas.DEMO_CHANNELS``)."""
    return folder("speeddata.demo_channels", "schemas")
