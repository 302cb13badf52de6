"""The built wheel, installed into fresh venvs outside the checkout, as a user gets it.

The wheel holds the page and the demo channels (from the top-level web/ and schemas/)
and nothing of the test harness. The full install runs relay + serve + demo + pivot from
an empty directory; the bare install (the sender alone) imports without numpy and says
which extra a role needs.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

import pytest

from speeddata.bench.services import free_port, fresh_group
from speeddata.config import write_file
from tests.helpers import PROJECT, TIMEOUT, wait_until

pytestmark = pytest.mark.e2e


# What the installed wheel runs with: no PYTHONPATH (the tests may run with the checkout
# on it, whose speeddata would be imported, and its page found, instead of the wheel's).
OUTSIDE = {name: value for name, value in os.environ.items() if name != "PYTHONPATH"}


def run(*argv: str | Path, cwd: Path | None = None, timeout: float = 600,
        env: dict[str, str] | None = None) -> str:
    done = subprocess.run([str(a) for a in argv], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=OUTSIDE if env is None else env)
    assert done.returncode == 0, f"{argv} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Built from a copy of the checkout's files as git sees them (tracked, or new and
    not ignored: no build/ of an earlier build, whose stale files setuptools would pack
    again), with a user's own channel and a retired one in its schemas/."""
    tree = tmp_path_factory.mktemp("tree")
    listed = run("git", "ls-files", "-z", "--cached", "--others", "--exclude-standard",
                 cwd=PROJECT)
    for name in filter(None, listed.split("\0")):
        if (PROJECT / name).is_file():  # not one deleted and not yet committed
            (tree / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(PROJECT / name, tree / name)
    (tree / "schemas" / "mine.avsc").write_text((tree / "schemas" / "env.avsc").read_text()
                                                .replace('"env"', '"mine"'))
    (tree / "schemas" / "retired").mkdir()
    (tree / "schemas" / "retired" / "old.avsc").write_text("{}")
    out = tmp_path_factory.mktemp("dist")
    run(sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", out, tree)
    (path,) = out.glob("speeddata-*.whl")
    return path


def test_the_wheel_holds_the_page_and_the_demo_channels_and_no_harness(wheel: Path) -> None:
    from speeddata.schemas import DEMO_CHANNELS, DEMO_DERIVED

    names = set(zipfile.ZipFile(wheel).namelist())
    page = {f"speeddata/web/{p.relative_to(PROJECT / 'web')}"
            for p in (PROJECT / "web").rglob("*") if p.is_file()}
    assert "speeddata/web/index.html" in page
    assert page <= names, sorted(page - names)
    assert {n for n in names if n.startswith("speeddata/web/")} == page
    assert {n for n in names if n.endswith(".avsc")} == {
        f"speeddata/demo_channels/{name}.avsc" for name in DEMO_CHANNELS}
    assert {n for n in names if n.endswith(".derived.toml")} == {
        f"speeddata/demo_channels/{name}.derived.toml" for name in DEMO_DERIVED}
    assert {n for n in names if n.startswith("speeddata/bench/")} == {
        "speeddata/bench/__init__.py", "speeddata/bench/relay.py",
        "speeddata/bench/services.py", "speeddata/bench/baseline.c"}
    assert {n for n in names if n.startswith("speeddata/codegen/")} == {  # the C part too
        "speeddata/codegen/__init__.py", "speeddata/codegen/model.py",
        "speeddata/codegen/c.py", "speeddata/codegen/common.h",
        "speeddata/codegen/probe.h"}
    harness = {"reliability.py", "store.py", "procs.py"}
    assert not {n for n in names if n.rsplit("/", 1)[-1] in harness} - {
        "speeddata/cache/store.py"}
    assert not {n for n in names if n.split("/", 1)[0] in ("tests", "web", "schemas")}


def venv(where: Path, requirement: str) -> Path:
    run(sys.executable, "-m", "venv", where)
    run(where / "bin" / "python", "-m", "pip", "install", "-q", requirement)
    return where / "bin"


def test_the_bare_wheel_is_a_sender_that_names_the_extras(wheel: Path, tmp_path: Path) -> None:
    bin_dir = venv(tmp_path / "venv", str(wheel))
    probe = ("import sys; from speeddata import Sender; import speeddata; "
             "print(sorted(m for m in ('numpy', 'h5py', 'fastapi') if m in sys.modules))")
    assert run(bin_dir / "python", "-c", probe, cwd=tmp_path).strip() == "[]"
    done = subprocess.run([bin_dir / "speeddata", "relay"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=60, env=OUTSIDE)
    assert done.returncode == 2
    assert "pip install 'speeddata[relay]'" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr


def test_the_full_wheel_runs_every_part_from_an_empty_directory(
        wheel: Path, tmp_path: Path) -> None:
    bin_dir = venv(tmp_path / "venv", f"speeddata[all] @ {wheel.as_uri()}")
    home = tmp_path / "home"
    home.mkdir()
    web_port = free_port(socket.SOCK_STREAM)
    # Every command reads the same ports and groups, the control group too (the tag below
    # would otherwise reach a running ./start); the rest are the defaults a user gets.
    sealed = write_file(tmp_path / "sealed.toml", {
        "relay": {"port": free_port()}, "web": {"port": web_port},
        "multicast": {key: str(fresh_group()) for key in ("full", "decimated", "control")}})
    env = {**OUTSIDE, "SPEEDDATA_CONFIG": str(sealed)}
    # the page and the demo schemas the wheel's code finds are the wheel's own
    probe = ("from speeddata import packaged, schemas; "
             "print(packaged.web_dir(), packaged.demo_dir(), schemas.DEMO_DIR)")
    found = run(bin_dir / "python", "-c", probe, cwd=home).split()
    site = f"{tmp_path / 'venv'}/lib/"
    assert [p.startswith(site) for p in found] == [True] * 3, found
    assert found[0].endswith("/speeddata/web") and found[1].endswith("/speeddata/demo_channels")
    up = subprocess.Popen([bin_dir / "speeddata", "up", "--demo"], cwd=home, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        run(bin_dir / "speeddata", "status", "--wait", str(3 * TIMEOUT), "-q", cwd=home,
            env=env)
        assert sorted(p.name for p in (home / "schemas").iterdir()) == [
            "env.avsc", "example.avsc", "motor.avsc", "power.derived.toml"]
        # on all interfaces by default, with a token: the printed URL carries it
        url = run(bin_dir / "speeddata", "status", "--url", cwd=home, env=env).strip()
        base, _, token = url.partition("/?token=")
        assert base.endswith(f":{web_port}") and len(token) > 20, url
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"{base}/api/channels", timeout=10)
        assert refused.value.code == 401

        def get(path: str) -> bytes:
            request = urllib.request.Request(f"{base}/{path}",
                                             headers={"Authorization": f"Bearer {token}"})
            return urllib.request.urlopen(request, timeout=10).read()

        assert b"<title>speeddata stripchart</title>" in get("")
        for asset in ("js/main.js", "js/chart.js", "css/style.css", "exports.html"):
            assert get(asset)
        channels = json.loads(get("api/channels"))
        assert {"motor", "env", "example"} <= {c["name"] for c in channels["channels"]}

        def motor_cached() -> bool:
            snapshot = json.loads(run(bin_dir / "speeddata", "status", "--json", cwd=home,
                                       env=env))
            return snapshot["relay"]["channels"].get("motor", {}).get("datagrams", 0) > 2000

        wait_until(motor_cached, what="2000 motor datagrams cached")
        run(bin_dir / "speeddata", "tag", "wheelrun", "--start", "-2s", "--end", "now",
            cwd=home, env=env)
    finally:
        up.terminate()
        output = up.communicate(timeout=30)[0]
    assert up.returncode == 0, output
    run(bin_dir / "speeddata", "pivot", "--tag", "wheelrun", cwd=home, env=env)
    probe = ("import speeddata, sys; s = speeddata.load(sys.argv[1]); "
             "m = s.channels['motor']; print(len(m.time), sorted(m.columns))")
    count, columns = run(bin_dir / "python", "-c", probe, home / "exports" / "wheelrun.h5",
                         cwd=home).split(" ", 1)
    assert int(count) > 1000
    assert "speed" in columns
