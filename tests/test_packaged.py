"""Where the page and the demo schemas are found: the source tree's top-level web/ and
schemas/, or the package of an installed wheel, and the three places that name the demo
channels (the code, pyproject.toml, .gitignore) agreeing."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

from speeddata import packaged, schemas
from speeddata.stripchart.app import WEB_DIR
from tests.helpers import PROJECT


def test_a_source_tree_takes_its_own_web_and_schemas() -> None:
    assert packaged.web_dir() == WEB_DIR == PROJECT / "web"
    assert packaged.demo_dir() == schemas.DEMO_DIR == PROJECT / "schemas"
    assert (WEB_DIR / "index.html").is_file()
    assert [p.name for p in schemas.demo_files()] == ["env.avsc", "example.avsc", "motor.avsc",
                                                      "power.derived.toml"]


def test_pyproject_and_gitignore_name_the_demo_channels_the_code_names() -> None:
    setuptools = tomllib.loads((PROJECT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert setuptools["package-dir"] == {"speeddata.web": "web",
                                         "speeddata.demo_channels": "schemas"}
    assert {"speeddata.web", "speeddata.demo_channels"} <= set(setuptools["packages"])
    files = [*(f"{name}.avsc" for name in schemas.DEMO_CHANNELS),
             *(f"{name}.derived.toml" for name in schemas.DEMO_DERIVED)]
    assert setuptools["package-data"]["speeddata.demo_channels"] == files
    assert setuptools["include-package-data"] is False  # nothing else of schemas/
    kept = [line.removeprefix("!/schemas/") for line in
            (PROJECT / ".gitignore").read_text().splitlines() if line.startswith("!/schemas/")]
    assert kept == files
    assert "/schemas/*" in (PROJECT / ".gitignore").read_text().splitlines()


def test_an_installed_package_finds_them_with_importlib_resources(tmp_path: Path) -> None:
    """As a wheel lays them out: speeddata/web/ and speeddata/demo_channels/, folders
    with no __init__.py, and no pyproject.toml above the package."""
    site = tmp_path / "site-packages"
    package = site / "speeddata"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    shutil.copy(Path(packaged.__file__), package / "packaged.py")
    (package / "web").mkdir()
    (package / "web" / "index.html").write_text("<title>x</title>")
    (package / "demo_channels").mkdir()
    (package / "demo_channels" / "motor.avsc").write_text("{}")
    probe = "from speeddata import packaged; print(packaged.web_dir(), packaged.demo_dir())"
    found = subprocess.run([sys.executable, "-I", "-c", f"import sys; sys.path[:0] = "
                            f"[{str(site)!r}]; {probe}"], capture_output=True, text=True,
                           check=True, cwd=tmp_path).stdout.split()
    assert found == [str(package / "web"), str(package / "demo_channels")]
