"""Derived channels that name other derived channels: computed in dependency order,
live and in the export with the same bits; a cycle, or a missing input, refused with
the cycle named (the build, a REST registration's 400)."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest

from speeddata.derived import files, live
from speeddata.errors import DerivedError
from speeddata.pivot import pivot
from tests.derived.common import PAIR, REGISTRY, SLOW, sines, toml
from tests.derived.test_export import BLOCK, N, fill

# written in the order that needs sorting: "top" names "mid" names "base"
TOP = toml("top", y='mean(mid.m, 5) + base.d', z="max(mid.m, 3) * slow.x")
MID = toml("mid", m='mean(base.d, "20ms")')
BASE = toml("base", d="pair.a - pair.b")


def definitions(*texts: str) -> list[files.DerivedChannel]:
    return [files.parse(t, f"<{i}>") for i, t in enumerate(texts)]


def test_a_chain_is_computed_in_order_and_equals_its_formula() -> None:
    built = live.DerivedSet.build(definitions(TOP, MID, BASE), REGISTRY)
    assert not built.errors
    assert [c.channel.name for c in built.compiled] == ["base", "mid", "top"]
    assert built.root("top") == "pair"
    columns = sines(200)
    built.compute(REGISTRY["slow"], {"time": columns["time"][:1] - 1, "x": np.array([2.0])})
    out = dict((c.name, v) for c, v in built.compute(REGISTRY["pair"], columns))
    d = columns["a"] - columns["b"]
    assert out["base"]["d"].tobytes() == d.tobytes()
    m = out["mid"]["m"]
    assert np.isnan(m[:20]).all() and np.allclose(m[20:], [d[i - 19: i + 1].mean()
                                                           for i in range(20, 200)])
    y = out["top"]["y"]
    assert np.isnan(y[:24]).all()
    assert np.allclose(y[24:], [m[i - 4: i + 1].mean() + d[i] for i in range(24, 200)])
    z = out["top"]["z"]
    assert np.allclose(z[22:], [m[i - 2: i + 1].max() * 2.0 for i in range(22, 200)])


def test_a_cycle_is_refused_naming_it_and_the_others_are_computed() -> None:
    a = toml("a", v="b.v + pair.a")
    b = toml("b", v="c.v * 2")
    c = toml("c", v="a.v - 1")
    built = live.DerivedSet.build(definitions(a, b, c, BASE, toml("d", v="a.v")), REGISTRY)
    assert [x.channel.name for x in built.compiled] == ["base"]
    said = [str(e) for e in built.errors]
    assert sum("a -> b -> c -> a" in s for s in said) == 3, said
    assert any("<4>" in s and "names a derived channel in a cycle" in s for s in said)
    with pytest.raises(DerivedError, match="cycle: self -> self"):
        live.check(files.parse(toml("self", v="self.v + pair.a"), "<s>"), REGISTRY)


def test_a_registration_closing_a_cycle_or_naming_nothing_is_refused(tmp_path: Path) -> None:
    (tmp_path / "mid.derived.toml").write_text(toml("mid", m="base.d * 2"))
    (tmp_path / "base.derived.toml").write_text(BASE)
    closing = files.parse(toml("base", d="mid.m + pair.a"), "<registered>")
    with pytest.raises(DerivedError, match="cycle: base -> mid -> base"):
        live.check(closing, REGISTRY, tmp_path)
    with pytest.raises(DerivedError, match="unknown channel 'nosuch'"):
        live.check(files.parse(toml("x", v="nosuch.v + mid.m"), "<registered>"), REGISTRY,
                   tmp_path)
    made = live.check(files.parse(toml("x", v="mid.m + 1"), "<registered>"), REGISTRY,
                      tmp_path)
    assert made.driver == "mid"


def test_the_export_computes_the_chain_with_the_live_bits(tmp_path: Path) -> None:
    channels = tmp_path / "schemas"
    channels.mkdir()
    for schema in (PAIR, SLOW):
        (channels / f"{schema['name']}.avsc").write_text(json.dumps(schema))
    for name, text in (("top", TOP), ("mid", MID), ("base", BASE)):
        (channels / f"{name}.derived.toml").write_text(text)
    columns = sines(N)
    fill(tmp_path / "cache", columns)
    registry = live.DerivedSet.build(definitions(TOP, MID, BASE), REGISTRY)
    # live: slow's sample of each block before the block, pair in 37-row batches
    got: dict[str, list[np.ndarray]] = {}
    for lo in range(0, N, BLOCK):
        recv = int(columns["time"][lo + BLOCK - 1]) + 1_000_000
        registry.compute(REGISTRY["slow"], {"time": np.array([recv - 2_000_000]),
                                            "x": np.array([float(lo)])})
        for at in range(lo, lo + BLOCK, 37):
            part = {k: v[at: min(at + 37, lo + BLOCK)] for k, v in columns.items()}
            for c, v in registry.compute(REGISTRY["pair"], part):
                for k in v:
                    got.setdefault(f"{c.name}.{k}", []).append(v[k])
    whole = {k: np.concatenate(v) for k, v in got.items()}
    start = int(columns["time"][40 * BLOCK - 1]) + 1_000_000  # warmed along the chain
    out = tmp_path / "chain.h5"
    result = pivot(tmp_path / "cache", out, start, start + 10**9, channels=["top"],
                   channels_dir=channels)
    assert set(result.channels) == {"top", "pair"}  # mid and base computed, not written
    with h5py.File(out) as h5:
        first = int(np.searchsorted(columns["time"], h5["top"]["time"][0]))
        for k in ("y", "z"):
            values = h5["top"][k][()]
            assert not np.isnan(values).any(), k
            assert values.tobytes() == whole[f"top.{k}"][first: first + len(values)
                                                         ].tobytes(), k
