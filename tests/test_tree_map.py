"""The README's map of the tree stays true: every module of speeddata/ and every top-level
folder has its line, and no line names what is gone."""

from __future__ import annotations

import subprocess
from pathlib import PurePosixPath

from tests.helpers import PROJECT

MARK = "<!-- tree map"


def map_paths() -> list[str]:
    """The paths the map names: the first word of each line of the block after MARK."""
    readme = (PROJECT / "README.md").read_text()
    block = readme[readme.index(MARK):].split("```text\n", 1)[1].split("```", 1)[0]
    return [line.split()[0] for line in block.splitlines() if line.strip()]


def tree_files() -> list[PurePosixPath]:
    """The files of the tree as git sees them: tracked (not deleted) or new and not
    ignored (so a module not yet added counts, and .venv/ or cache/ do not)."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=PROJECT, capture_output=True, text=True, check=True).stdout
    return [PurePosixPath(name) for name in listed.split("\0")
            if name and (PROJECT / name).is_file()]


def test_the_map_names_every_module_and_top_level_folder_and_nothing_gone() -> None:
    named = map_paths()
    assert len(named) == len(set(named)), "the map names a path twice"
    files = tree_files()
    # a package's __init__.py may be mapped by its folder's line (speeddata/cache/)
    modules = {str(f) for f in files if f.parts[0] == "speeddata" and f.suffix == ".py"}
    folders = {f"{f.parts[0]}/" for f in files if len(f.parts) > 1}
    missing = sorted(m for m in modules if m not in named and not (
        m.endswith("/__init__.py") and m.removesuffix("__init__.py") in named))
    missing += sorted(folders - set(named))
    assert not missing, ("README's tree map has no line for: " + ", ".join(missing)
                         + " (add one: the path, then what it is for)")
    gone = [p for p in named if not (PROJECT / p).exists()]
    assert not gone, "README's tree map names what is gone: " + ", ".join(gone)


def test_the_map_reads_as_the_tree_does() -> None:
    """A folder's line comes before the lines inside it."""
    seen: set[str] = set()
    for path in map_paths():
        parent = str(PurePosixPath(path.rstrip("/")).parent)
        if parent != ".":
            assert f"{parent}/" in seen, f"{path} comes before {parent}/'s line"
        seen.add(path)
