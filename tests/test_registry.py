"""The registry: names, suggestions, duplicates, TOML validation, and plugins through entry points."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from bench.cli import main
from bench.core.errors import ConfigError, DuplicateNameError, UnknownNameError
from bench.core.registry import Registry, get_registry, register

REPO = Path(__file__).resolve().parent.parent


def test_unknown_name_suggests_the_closest():
    with pytest.raises(UnknownNameError, match=r"unknown normalizer 'percentil'; did you mean 'percentile'( or|\?)"):
        get_registry().get("norm", "percentil")
    with pytest.raises(UnknownNameError, match="did you mean 'unet_mnv2'"):
        get_registry().get("model", "unet_mnv")


def test_duplicate_registration_raises():
    reg = Registry()

    def factory():
        return None

    reg.add_builder("norm", "mine", factory)
    with pytest.raises(DuplicateNameError, match="registered twice"):
        reg.add_builder("norm", "mine", factory)
    reg.add("norm", "one", type="mine")
    with pytest.raises(DuplicateNameError, match="'one' is registered twice"):
        reg.add("norm", "one", type="mine")


def test_unknown_toml_key_names_the_closest_known_key(tmp_path):
    reg = get_registry()
    fresh = Registry()
    fresh.add_builder("norm", "percentile", reg.builder("norm", "percentile").fn)
    bad = tmp_path / "norms.toml"
    bad.write_text('[p2]\ntype = "percentile"\nlow = 2.0\nhihg = 98.0\n')
    with pytest.raises(ConfigError, match=r"norms.toml \[p2\]: unknown key 'hihg'; did you mean 'high'\?"):
        fresh.add_toml_tables("norm", bad)


def test_malformed_toml_names_file_and_line(tmp_path):
    bad = tmp_path / "models.toml"
    bad.write_text('[unet_x]\ntype = "smp"\narch = unet\n')
    with pytest.raises(ConfigError, match=r"models.toml: malformed TOML: .*line 3"):
        Registry().add_toml_tables("model", bad)


CATALOGUE = sorted([*(REPO / "registry").glob("*.toml"), *(REPO / "scenarios").glob("*.toml"),
                    *(REPO / "registry" / "datasets").glob("*.toml"),
                    *(REPO / "bench" / "samples").glob("*/dataset.toml")])


@pytest.mark.parametrize("path", CATALOGUE, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_catalogue_toml_validates(path):
    kind = {"registry": None, "scenarios": "scenario"}.get(path.parent.name, "dataset")
    reg = Registry()
    for k in ("model", "norm", "adapter", "dataset", "scenario", "shift"):
        for b in get_registry()._builders[k].values():
            reg.add_builder(k, b.name, b.fn, b.description)
    if kind is None:
        kind = {"models": "model", "norms": "norm", "adapters": "adapter"}[path.stem]
        reg.add_toml_tables(kind, path)
        assert reg.names(kind)
    else:
        entry = reg.add_toml_file(kind, path, default_type="scenario" if kind == "scenario" else "geotiff")
        assert entry.settings["version"] >= 1
        built = entry.build(origin=entry.origin)  # every check of the file, not only its keys and types
        assert built.name == entry.name


def test_list_filters_with_wildcards(capsys):
    assert main(["list", "models", "unet_*"]) == 0
    out = capsys.readouterr().out
    assert "unet_mnv2" in out and "unet_r18" in out and "deeplabv3p_mnv2" not in out
    assert main(["list", "norms"]) == 0
    assert {"none", "percentile", "zscore"} <= {line.split()[0] for line in capsys.readouterr().out.splitlines()}
    assert main(["list", "modles"]) == 2
    assert "did you mean 'models'" in capsys.readouterr().err


def _fake_distribution(site: Path, dist: str, module: str, source: str) -> None:
    (site / f"{module}.py").write_text(textwrap.dedent(source))
    info = site / f"{dist}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[cloudbench.plugins]\n{dist} = {module}\n")


PLUGIN = '''
    """A third-party normalizer: per-band min-max of the training split."""
    import numpy as np
    from bench import register
    from bench.data.normalizers import Normalizer

    @register("norm", "minmax_demo", entry=True)
    class MinMax(Normalizer):
        """Per-band min-max of the training split (demo plugin)."""
        type_name = "minmax_demo"

        def _reset(self):
            super()._reset()
            self.lo = self.hi = None

        def _update(self, values):
            lo, hi = np.array([v.min() for v in values]), np.array([v.max() for v in values])
            self.lo = lo if self.lo is None else np.minimum(self.lo, lo)
            self.hi = hi if self.hi is None else np.maximum(self.hi, hi)

        def _apply(self, x):
            return (x - self.lo[:, None, None]) / (self.hi - self.lo)[:, None, None]

        def _state(self):
            return {"lo": self.lo.tolist(), "hi": self.hi.tolist()}

        def _load(self, state):
            self.lo, self.hi = np.array(state["lo"]), np.array(state["hi"])
'''


@pytest.fixture
def plugin_site(tmp_path, monkeypatch):
    site = tmp_path / "site"
    site.mkdir()
    _fake_distribution(site, "cloudbench_minmax", "cb_minmax_plugin", PLUGIN)
    _fake_distribution(site, "cloudbench_broken", "cb_broken_plugin", "raise ImportError('needs libfoo')\n")
    monkeypatch.syspath_prepend(str(site))
    yield site
    get_registry(reload=True)


def test_entry_point_plugin_is_listed_and_runs(plugin_site, tmp_path, capsys, tiny_dataset):
    with pytest.warns(UserWarning, match="plugin 'cloudbench_broken'.*skipped.*needs libfoo"):
        reg = get_registry(reload=True)
    assert "minmax_demo" in reg.names("norm")
    assert main(["list", "norms", "minmax*"]) == 0
    assert "minmax_demo" in capsys.readouterr().out

    from conftest import write_scenario

    scenario = write_scenario(tmp_path / "plug.toml", str(tiny_dataset), str(tiny_dataset))
    assert main(["run", "--norm", "minmax_demo", "--scenario", str(scenario), "--out", str(tmp_path / "runs"),
                 "--no-leaderboard", "--quiet", "--no-figure", "--max-steps", "1"]) == 0
    import json

    (result,) = (tmp_path / "runs" / "results" / "plug").glob("*.json")
    state = json.loads(result.read_text())["normalizer"]["state"]
    assert state["type"] == "minmax_demo" and len(state["lo"]) == 6


def test_register_marks_without_side_effects():
    @register("norm", "unattached")
    def factory():
        """Not registered until a registry scans its module."""

    assert "unattached" not in get_registry().names("norm")
    assert factory.__bench_builders__[0]["name"] == "unattached"


def test_toml_values_are_type_checked_against_the_builder(tmp_path):
    """A value of the wrong type is refused when the entry is added, naming the file, table and key."""
    bad = tmp_path / "norms.toml"
    bad.write_text('[p2]\ntype = "percentile"\nlow = "1"\n')
    with pytest.raises(ConfigError, match=r"norms.toml \[p2\]: low = '1': input should be a valid number"):
        _fresh("norm", "percentile").add_toml_tables("norm", bad)
    ok = tmp_path / "ok.toml"
    ok.write_text('[p2]\ntype = "percentile"\nlow = 2\nhigh = 98.0\n')  # an int is a fine float
    reg = _fresh("norm", "percentile")
    reg.add_toml_tables("norm", ok)
    assert reg.get("norm", "p2").build().low == 2.0


def _fresh(kind: str, builder: str) -> Registry:
    reg = Registry()
    reg.add_builder(kind, builder, get_registry().builder(kind, builder).fn)
    return reg


def test_dataset_types_take_typed_keyword_arguments(tmp_path):
    """Dataset TOMLs are checked like every other builder: unknown keys, missing keys, wrong types."""
    from bench.data.datasets import load_dataset

    base = 'name = "x"\nreference = "human"\nbands = ["B02"]\nimages = "i/*.tif"\nmasks = "m/{stem}.tif"\n' \
           '[labels]\ncodes = { 0 = "clear" }\n'
    for extra, message in [('imagse = "x"\n', "unknown key 'imagse'; did you mean 'images'"),
                           ('version = "2"\n', r"version = '2': input should be a valid integer")]:
        path = tmp_path / "dataset.toml"
        path.write_text(extra + base)
        with pytest.raises(ConfigError, match=message):
            load_dataset(str(path))
    path.write_text(base.replace('masks = "m/{stem}.tif"\n', ""))
    with pytest.raises(ConfigError, match=r"dataset.toml: missing required key 'masks'"):
        load_dataset(str(path))


def test_scenario_include_merges_tables_and_refuses_cycles(tmp_path):
    from bench.data.scenarios import load_scenario

    (tmp_path / "base").mkdir()
    (tmp_path / "base" / "common.toml").write_text(textwrap.dedent("""\
        bands = ["B02", "B03", "B04", "B08", "B11", "B12"]
        [recipe]
        patch_size = 64
        batch_size = 4
        [train]
        dataset = "ukis_csmask_s2"
        window = { rows = [0, 512], cols = [0, 384] }
        [val]
        dataset = "ukis_csmask_s2"
        window = { rows = [0, 256], cols = [384, 512] }
        """))
    mine = tmp_path / "mine.toml"
    mine.write_text(textwrap.dedent("""\
        include = "base/common.toml"
        name = "mine"
        version = 2
        [recipe]
        batch_size = 8
        [test]
        dataset = "eolearn_slovenia"
        """))
    s = load_scenario(str(mine))
    assert s.name == "mine" and s.version == 2 and len(s.bands) == 6
    assert s.recipe == {"patch_size": 64, "batch_size": 8}  # tables merge key by key; the file wins
    assert s.sources["train"].window == ((0, 512), (0, 384)) and s.sources["test"].dataset == "eolearn_slovenia"
    (tmp_path / "base" / "common.toml").write_text('include = "../mine.toml"\n')
    with pytest.raises(ConfigError, match="include cycle"):
        load_scenario(str(mine))
    mine.write_text('include = "nope.toml"\nname = "mine"\n')
    with pytest.raises(ConfigError, match="included file .*nope.toml does not exist"):
        load_scenario(str(mine))


def test_embedded_scenarios_share_their_base_files():
    """The ukis-patch scenarios include one base file, so their training data are one definition."""
    from bench.data.scenarios import load_scenario

    names = ["samples_intra", "samples_cross", "shift_gain", "shift_haze", "shift_noise", "shift_offset",
             "shift_resolution"]
    for n in names:
        assert 'include = "base/' in (REPO / "scenarios" / f"{n}.toml").read_text()
    train = {n: (load_scenario(n).sources["train"], load_scenario(n).sources["val"]) for n in names}
    assert len(set(train.values())) == 1
