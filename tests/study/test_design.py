"""Study designs: grid, zip and Latin hypercube points, and overrides the loader reads back."""

from __future__ import annotations

import tomllib
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from scitokens_batch.study import expand
from scitokens_batch.study._design import toml_literal
from scitokens_batch.study._spec import parse_study

ROOT = Path(__file__).resolve().parents[2]


def _study(**table: object) -> object:
    raw = {"scenario": "scenarios/issuer-outage.toml", **table}
    return parse_study(raw, file="s.toml", base=ROOT)


def test_grid_is_the_cartesian_product_last_key_fastest() -> None:
    """A grid of 2 x 3 values gives 6 points, the last key varying fastest."""
    study = _study(grid={"a.x": [1, 2], "b.y": ["1m", "5m", "10m"]})
    points = expand(study)  # type: ignore[arg-type]
    assert [p.params for p in points] == [
        (("a.x", a), ("b.y", b)) for a in (1, 2) for b in ("1m", "5m", "10m")
    ]
    assert [p.index for p in points] == list(range(6))
    assert points[1].overrides == ("a.x=1", 'b.y="5m"')
    assert points[1].label == 'point 1 (a.x=1, b.y="5m")'


def test_zip_varies_lists_together_and_crosses_with_the_grid() -> None:
    """Zip lists advance together; a grid beside them is crossed with each zip row."""
    study = _study(zip={"a": [1, 2], "b": ["x", "y"]}, grid={"c": [True, False]})
    params = [dict(p.params) for p in expand(study)]  # type: ignore[arg-type]
    assert params == [
        {"c": True, "a": 1, "b": "x"},
        {"c": False, "a": 1, "b": "x"},
        {"c": True, "a": 2, "b": "y"},
        {"c": False, "a": 2, "b": "y"},
    ]


def test_no_design_is_one_point() -> None:
    """A study that varies nothing runs the scenario as it is (over its seeds)."""
    study = _study(seeds=[3, 4])
    points = expand(study)  # type: ignore[arg-type]
    assert len(points) == 1 and points[0].params == ()
    assert study.seeds == (3, 4)  # type: ignore[attr-defined]


def test_seed_count_means_seeds_one_to_n() -> None:
    """`seeds = 5` runs seeds 1 to 5."""
    assert _study(seeds=5).seeds == (1, 2, 3, 4, 5)  # type: ignore[attr-defined]


def test_latin_hypercube_puts_one_point_in_each_stratum() -> None:
    """n samples of each range fall one per 1/n stratum, keep their kind, and repeat per seed."""
    ranges = {"f": [0.0, 1.0], "d": ["0s", "100s"], "z": ["0B", "1000B"]}
    study = _study(sample={"n": 10, "seed": 3, "ranges": ranges})
    points = expand(study)  # type: ignore[arg-type]
    assert len(points) == 10
    fs = sorted(float(dict(p.params)["f"]) for p in points)  # type: ignore[arg-type]
    ds = sorted(float(str(dict(p.params)["d"])[:-1]) for p in points)
    zs = [str(dict(p.params)["z"]) for p in points]
    assert [int(f * 10) for f in fs] == list(range(10))
    assert [int(d / 10) for d in ds] == list(range(10))
    assert all(z.endswith("B") and z[:-1].isdigit() for z in zs)
    assert expand(study) == points  # type: ignore[arg-type]
    other = _study(sample={"n": 10, "seed": 4, "ranges": ranges})
    assert expand(other) != points  # type: ignore[arg-type]


@given(
    st.one_of(
        st.booleans(),
        st.integers(min_value=-(2**63), max_value=2**63 - 1),
        st.floats(allow_nan=False, allow_infinity=False),
        st.text(alphabet=st.characters(exclude_categories=("Cs",)), max_size=20),
    )
)
def test_toml_literal_round_trips(value: object) -> None:
    """Every point value written as an override reads back as exactly the same TOML value."""
    assert tomllib.loads(f"v = {toml_literal(value)}")["v"] == value  # type: ignore[arg-type]
