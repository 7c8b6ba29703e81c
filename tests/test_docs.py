"""The documentation holds: every ``bench`` command it shows parses, with names that exist; the tested
examples print what their page shows; the TOML and Python examples are read as written; the site builds
with ``mkdocs build --strict`` and every internal link and anchor in it resolves.

A tested example is a region ``<!-- example -->`` ... ``<!-- end example -->`` of a page: its ``bash``
block is run by bash (with ``bench`` recording its arguments, then run in-process in a scratch folder) and
what the commands print must match the ``text`` block that follows, line by line (``...`` skips lines).
"""

from __future__ import annotations

import argparse
import contextlib
import html.parser
import importlib.util
import io
import os
import re
import shlex
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

import numpy as np
import pytest

from bench import cli
from bench.core.registry import KIND_ALIASES, KINDS, get_registry, is_path

REPO = Path(__file__).resolve().parent.parent
README = REPO / "README.md"
DOCS = REPO / "docs"
PAGES = [README, *sorted(DOCS.rglob("*.md"))]
FENCE = re.compile(r"^```(?P<lang>[\w-]*)[^\n]*\n(?P<body>.*?)^```[ \t]*$", re.S | re.M)
INLINE = re.compile(r"(?<!`)`(bench [^`\n]+)`(?!`)")
EXAMPLE = re.compile(r"<!-- example -->(?P<body>.*?)<!-- end example -->", re.S)
SHELL = {"bash", "sh", "shell", "console"}
# the options whose values name registry entries, per subcommand: dest -> kind
NAMED = {
    "run": {"model": "model", "norm": "norm", "adapt": "adapter", "scenario": "scenario"},
    "sweep": {"models": "model", "norms": "norm", "adapt": "adapter", "scenarios": "scenario"},
    "predict": {"model": "model"},
    "assess": {"model": "model", "scenario": "scenario", "calibrate_on": "scenario"},
    "report": {"scenario": "scenario"},
    "leaderboard": {"scenario": "scenario"},
    "score": {"pred_codes": "codes", "ref_codes": "codes"},
}
DOWNLOADS = {"cloudsen12", "cloudsen12_figure04"}  # download names besides the datasets' own


def name(page: Path) -> str:
    return str(page.relative_to(REPO))


# --- commands -------------------------------------------------------------------------------------------


@dataclass
class Command:
    """One ``bench`` command line of a page: where it is, its arguments, and whether it is a whole command
    (a line of a shell block) or a mention in the text (an inline code span)."""

    where: str
    argv: list[str]
    whole: bool

    def __str__(self) -> str:
        return f"{self.where}: bench {shlex.join(self.argv)}"


def shell_segments(text: str) -> list[list[str]]:
    """The simple commands of a shell block: continuation lines joined, comments dropped, split at ``&&``,
    ``||``, ``;`` and ``|``."""
    out: list[list[str]] = []
    for line in text.replace("\\\n", " ").splitlines():
        lex = shlex.shlex(line, posix=True, punctuation_chars=";&|")
        lex.whitespace_split = True
        seg: list[str] = []
        for tok in lex:
            if tok in {"&&", "||", ";", "|", "&"}:
                out.append(seg)
                seg = []
            else:
                seg.append(tok)
        out.append(seg)
    return [s for s in out if s]


def commands(page: Path) -> list[Command]:
    """Every ``bench`` command of a page: in its shell blocks, and in its text as inline code."""
    text = page.read_text()
    found = []
    for m in FENCE.finditer(text):
        if m["lang"] in SHELL:
            line = text[: m.start()].count("\n") + 1
            for seg in shell_segments(m["body"]):
                if Path(seg[0]).name == "bench":
                    found.append(Command(f"{name(page)}:{line}", seg[1:], True))
    prose = FENCE.sub("", text)
    for m in INLINE.finditer(prose):
        argv = shlex.split(m[1])[1:]
        if len(argv) > 1 or (argv and argv[0] in ("list", "report", "leaderboard")):  # not a bare mention
            found.append(Command(f"{name(page)} (text)", argv, False))
    return found


ALL_COMMANDS = [c for p in PAGES for c in commands(p)]


def subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def takes_value(action: argparse.Action) -> bool:
    return action.nargs != 0


def placeholder(value: str) -> bool:
    """``...``, ``<key>``, ``DIR``, ``$scene``: a value the reader fills in."""
    return value == "..." or "<" in value or "$" in value or re.fullmatch(r"[A-Z_]+", value) is not None


def walk(cmd: Command) -> tuple[str, dict[str, list[str]], list[str]]:
    """The subcommand (``data check`` for two levels), each option's values by dest, and the positional
    arguments; an unknown subcommand or option fails the test. ``...`` (text left out) is dropped."""
    parser = cli.build_parser()
    subs = subparsers(parser)
    argv = list(cmd.argv)
    if argv and argv[0].startswith("-"):  # bench --version, bench --help
        assert all(a in parser._option_string_actions for a in argv), f"{cmd}: bench has no such option"
        return "", {}, []
    assert argv and argv[0] in subs, f"{cmd}: no such subcommand (bench has {sorted(subs)})"
    sub = argv.pop(0)
    p = subs[sub]
    if sub == "data":
        dsubs = subparsers(p)
        assert argv and argv[0] in dsubs, f"{cmd}: no such data action (there are {sorted(dsubs)})"
        sub, p = f"data {argv[0]}", dsubs[argv.pop(0)]
    options: dict[str, list[str]] = {}
    positionals: list[str] = []
    while argv:
        tok = argv.pop(0)
        if tok.startswith("--"):
            flag, eq, value = tok.partition("=")
            action = p._option_string_actions.get(flag)
            assert action is not None, f"{cmd}: bench {sub} has no option {flag}"
            if takes_value(action):
                options.setdefault(action.dest, []).append(value if eq else argv.pop(0) if argv else "...")
        elif tok != "...":
            positionals.append(tok)
    return sub, options, positionals


def check_names(cmd: Command, sub: str, options: dict[str, list[str]], positionals: list[str]) -> None:
    """Every registry name a command uses exists (a wildcard matches something)."""
    from bench.sweep.grid import expand

    reg = get_registry()
    for dest, kind in NAMED.get(sub, {}).items():
        for value in options.get(dest, []):
            if placeholder(value):
                continue
            if kind == "codes":  # a masks preset, a TOML / JSON table, or an inline CODE=CLASS table
                if "=" not in value and not value.endswith((".toml", ".json")):
                    assert value in reg.names("model", "masks_*"), f"{cmd}: {value!r} is not a masks preset"
            elif sub in ("report", "leaderboard") and value == "label_free":
                continue
            else:
                expand(kind, value)  # an unknown name or an empty wildcard raises, with "did you mean"
    models = [m for dest in ("model", "models") for v in options.get(dest, []) for m in v.split(",")]
    for text in options.get("settings", []):
        from bench.run.plan import parse_setting

        key, values = parse_setting(text)
        for m in (m for m in models if not placeholder(m)):
            for entry in reg.entries("model", m):
                for v in values:
                    entry.with_settings({key: v})  # an unknown key or a value of the wrong type raises
    if sub == "list" and positionals:
        kind = KIND_ALIASES.get(positionals[0], positionals[0])
        assert kind in KINDS, f"{cmd}: no plugin kind {positionals[0]!r}"
        pattern = positionals[1] if len(positionals) > 1 else "*"
        assert reg.names(kind, pattern), f"{cmd}: nothing matches {pattern!r}"
    if sub in ("data download", "data verify") and not placeholder(positionals[0]):
        assert positionals[0] in DOWNLOADS | set(reg.names("dataset")), f"{cmd}: no dataset {positionals[0]!r}"


def check_whole(cmd: Command) -> None:
    """A shell-block command parses as ``bench`` parses it, and a run's or sweep's names and values pass
    the checks ``bench run`` and ``bench sweep`` make before anything runs."""
    from bench.sweep.grid import Grid

    argv = [a for i, a in enumerate(cmd.argv) if a != "..." or (i and cmd.argv[i - 1].startswith("--"))]
    try:
        with contextlib.redirect_stderr(io.StringIO()) as err:
            args = cli.build_parser().parse_args(argv)
    except SystemExit:
        pytest.fail(f"{cmd}: {err.getvalue().strip().splitlines()[-1]}")
    args.data_root = None  # a placeholder or the reader's own folder
    if args.command == "run" and not any(placeholder(a) for a in argv):
        cfg = cli._run_config(args, argv, model=args.model, norm=args.norm, scenario=args.scenario,
                              adapt=args.adapt, seed=args.seed, weights=args.weights,
                              settings={k: v[0] for k, v in cli.model_settings(args).items()})
        cfg.validate()
    if args.command == "sweep" and not any(placeholder(a) for a in argv):
        grid = Grid(models=args.models, norms=args.norms, adapts=args.adapt, scenarios=args.scenarios,
                    seeds=args.seeds, settings=cli.model_settings(args),
                    base=cli._run_config(args, argv, progress=False, leaderboards=False))
        for cfg in grid.configs():
            cfg.validate()


def test_the_docs_show_commands():
    assert len([c for c in ALL_COMMANDS if c.whole]) >= 40
    assert {c.argv[0] for c in ALL_COMMANDS} >= {"run", "sweep", "predict", "assess", "score", "leaderboard",
                                                  "report", "list", "data"}


@pytest.mark.parametrize("cmd", ALL_COMMANDS, ids=str)
def test_every_bench_command_in_the_docs_is_valid(cmd):
    sub, options, positionals = walk(cmd)
    check_names(cmd, sub, options, positionals)
    if cmd.whole and sub:
        check_whole(cmd)


def options(parser: argparse.ArgumentParser, prefix: str = "bench") -> list[tuple[str, str]]:
    """(command, option) for every long option of every subcommand, at any depth."""
    out = [(prefix, o) for a in parser._actions for o in a.option_strings if o.startswith("--") and o != "--help"]
    action = next((a for a in parser._actions if isinstance(a, argparse._SubParsersAction)), None)
    for sub, p in (action.choices.items() if action else ()):
        out += options(p, f"{prefix} {sub}")
    return out


def test_every_option_of_bench_is_in_the_docs():
    text = "\n".join(p.read_text() for p in PAGES)
    missing = [f"{cmd} {o}" for cmd, o in options(cli.build_parser())
               if not re.search(rf"(?<![\w-]){re.escape(o)}(?![\w-])", text)]
    assert not missing, f"options no page mentions (say what they do in docs/): {missing}"


def test_the_readme_sets_up_with_the_two_commands_ci_runs():
    shown = [m["body"].strip() for m in FENCE.finditer(README.read_text()) if m["lang"] == "bash"]
    install = 'python3 -m venv .venv && .venv/bin/pip install -e ".[test]" && .venv/bin/bench run'
    test = ".venv/bin/python -m pytest"
    assert shown[:2] == [install, test], "the README opens with its two set-up commands"
    ci = (REPO / ".ci" / "run").read_text().splitlines()
    assert test in ci, ".ci/run runs the README's test command"


# --- tested examples ------------------------------------------------------------------------------------

RECORD = 'bench() { printf "%s\\0" "$@" >> "$BENCH_CALLS"; printf "\\1\\0" >> "$BENCH_CALLS"; }\n'


def examples() -> list[tuple[str, str, str]]:
    """(where, shell block, expected output) of every tested example."""
    out = []
    for page in PAGES:
        text = page.read_text()
        for m in EXAMPLE.finditer(text):
            fences = {f["lang"]: f["body"] for f in FENCE.finditer(m["body"])}
            assert set(fences) == {"bash", "text"}, f"{name(page)}: an example is a bash block and its text output"
            out.append((f"{name(page)}:{text[: m.start()].count(chr(10)) + 1}", fences["bash"], fences["text"]))
    return out


def recorded_calls(script: str, cwd: Path) -> list[list[str]]:
    """The ``bench`` calls a shell block makes, as bash expands them (loops, variables, quotes)."""
    calls = cwd / ".bench_calls"
    calls.write_bytes(b"")
    subprocess.run(["bash", "-euc", RECORD + script], cwd=cwd, check=True, env={**os.environ, "BENCH_CALLS": str(calls)})
    out, call = [], []
    for arg in calls.read_bytes().decode().split("\0")[:-1]:
        if arg == "\1":
            out.append(call)
            call = []
        else:
            call.append(arg)
    return out


def matches(expected: str, printed: str) -> str | None:
    """None when ``printed`` shows every line of ``expected`` in order (``...`` skips lines; blank lines and
    trailing spaces do not count); else the first expected line not found."""
    got = [line.rstrip() for line in printed.splitlines() if line.strip()]
    i, skipping = 0, False
    for want in (line.rstrip() for line in expected.splitlines() if line.strip()):
        if want == "...":
            skipping = True
            continue
        while skipping and i < len(got) and got[i] != want:
            i += 1
        if i >= len(got) or got[i] != want:
            return want
        i, skipping = i + 1, False
    return None


@pytest.mark.parametrize("where,script,expected", examples(), ids=[e[0] for e in examples()])
def test_each_example_prints_what_its_page_shows(where, script, expected, tmp_path, monkeypatch, capsys):
    (tmp_path / "bench").symlink_to(REPO / "bench")  # the pages' paths are relative to the checkout
    calls = recorded_calls(script, tmp_path)
    assert calls, f"{where}: the example runs no bench command"
    monkeypatch.chdir(tmp_path)
    printed = []
    for argv in calls:
        code = cli.main(argv)
        printed.append(capsys.readouterr().out)
        assert code == 0, f"{where}: bench {shlex.join(argv)} exited {code}"
    missing = matches(expected, "".join(printed))
    assert missing is None, f"{where}: the commands did not print {missing!r}; they printed:\n{''.join(printed)}"


# --- TOML and Python examples ---------------------------------------------------------------------------


def fenced(page: Path, lang: str) -> list[str]:
    return [m["body"] for m in FENCE.finditer(page.read_text()) if m["lang"] == lang]


def write_scenes(folder: Path, n_bands: int, size: int = 64) -> None:
    """Tiny L1C-like GeoTIFFs in digital numbers with label codes 0-3, as the own-data page describes."""
    import rasterio
    from rasterio.transform import from_origin

    rng = np.random.default_rng(0)
    (folder / "images").mkdir(parents=True)
    (folder / "masks").mkdir()
    profile = {"driver": "GTiff", "width": size, "height": size, "crs": "EPSG:32633",
               "transform": from_origin(500000, 5100000, 10, 10)}
    for stem in ("a", "b"):
        dn = rng.integers(1100, 4000, (n_bands, size, size), dtype=np.uint16)
        with rasterio.open(folder / "images" / f"{stem}.tif", "w", count=n_bands, dtype="uint16", **profile) as f:
            f.write(dn)
        codes = rng.integers(0, 4, (1, size, size), dtype=np.uint8)
        with rasterio.open(folder / "masks" / f"{stem}.tif", "w", count=1, dtype="uint8", **profile) as f:
            f.write(codes)


def test_the_own_data_page_toml_is_read_as_written(tmp_path, monkeypatch, capsys):
    from bench.data.scenarios import load_scenario
    from bench.run.plan import RunConfig, plan

    page = DOCS / "own-data.md"
    tomls = {t.splitlines()[0].lstrip("# ").strip(): t for t in fenced(page, "toml")}
    assert set(tomls) == {"my_scenes/dataset.toml", "my_scenario.toml"}
    for path, text in tomls.items():
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text(text)
    write_scenes(tmp_path / "my_scenes", len(tomllib.loads(tomls["my_scenes/dataset.toml"])["bands"]))
    monkeypatch.chdir(tmp_path)
    assert cli.main(["data", "check", "my_scenes/dataset.toml"]) == 0, capsys.readouterr().out
    assert "2 scenes, 0 with errors" in capsys.readouterr().out
    assert load_scenario("./my_scenario.toml").name == "my_scenario"
    planned = plan(RunConfig(scenario="./my_scenario.toml"))  # every split found, its bands and files read
    assert planned.scenario.name == "my_scenario"


def test_the_python_examples_compile_and_import():
    for page in PAGES:
        for i, src in enumerate(fenced(page, "python")):
            code = compile(src, f"{name(page)} python block {i}", "exec")
            imports = "\n".join(l for l in src.splitlines() if l.startswith(("from bench", "import bench")))
            exec(compile(imports, code.co_filename, "exec"), {})


def test_the_python_api_example_configures_a_valid_run():
    from bench.run.runner import RunConfig

    src = next(s for s in fenced(DOCS / "getting-started.md", "python") if "RunConfig(" in s)
    call = re.search(r"RunConfig\((.*?)\)\)", src)[1]
    cfg = eval(f"RunConfig({call})", {"RunConfig": RunConfig})
    cfg.validate()


# --- links and the site ---------------------------------------------------------------------------------

LINK = re.compile(r"(?<!!)\[[^\]]*\]\((?P<target>[^)\s]+)\)")


def test_the_readme_links_into_the_site():
    targets = [m["target"] for m in LINK.finditer(README.read_text()) if "://" not in m["target"]]
    assert any(t.startswith("docs/") for t in targets)
    for t in targets:
        path = REPO / unquote(urlsplit(t).path)
        assert path.exists(), f"README.md links to {t}, which does not exist"
    linked = {(REPO / urlsplit(t).path).resolve() for t in targets}
    pages = {p.resolve() for p in DOCS.glob("*.md") if p.name != "index.md"} | {(DOCS / "api" / "index.md").resolve()}
    assert not pages - linked - {(DOCS / "architecture.md").resolve()}, "the README links to every page"


def have_mkdocs() -> bool:
    return all(importlib.util.find_spec(m) for m in ("mkdocs", "material", "mkdocstrings_handlers.python"))


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    if not have_mkdocs():
        pytest.skip('mkdocs, mkdocs-material or mkdocstrings-python is not installed (pip install -e ".[docs]")')
    out = tmp_path_factory.mktemp("site")
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet", "--site-dir", str(out),
                           "--config-file", str(REPO / "mkdocs.yml")], cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert done.returncode == 0, f"mkdocs build --strict failed:\n{done.stderr[-4000:]}"
    return out


def test_the_site_builds_strict(site):
    for page in DOCS.rglob("*.md"):
        rel = page.relative_to(DOCS).with_suffix("")
        built = site / ("index.html" if rel.name == "index" and rel.parent == Path(".") else
                        rel.parent / "index.html" if rel.name == "index" else rel / "index.html")
        assert built.exists(), f"{name(page)} was not built"
    api = (site / "api" / "core" / "index.html").read_text()
    assert 'id="bench.core.metrics"' in api, "the API reference renders the modules' docstrings"


class Links(html.parser.HTMLParser):
    """The ids of a page and the links (href, src) it makes."""

    def __init__(self) -> None:
        super().__init__()
        self.ids: set[str] = set()
        self.links: list[str] = []

    def handle_starttag(self, tag, attrs):
        for key, value in attrs:
            if key in ("id", "name") and value:
                self.ids.add(value)
            if key in ("href", "src") and value:
                self.links.append(value)


def parsed(path: Path, cache: dict[Path, Links]) -> Links:
    if path not in cache:
        cache[path] = Links()
        cache[path].feed(path.read_text(errors="replace"))
    return cache[path]


def test_every_internal_link_of_the_site_resolves(site):
    cache: dict[Path, Links] = {}
    broken = []
    for page in site.rglob("*.html"):
        for link in parsed(page, cache).links:
            url = urlsplit(link)
            if url.scheme or url.netloc or link.startswith(("mailto:", "javascript:", "data:")):
                continue
            base = site if url.path.startswith("/") else page.parent  # 404.html links from the site's root
            target = page if not url.path else (base / unquote(url.path).lstrip("/")).resolve()
            if target.is_dir():
                target = target / "index.html"
            if not target.exists():
                broken.append(f"{page.relative_to(site)}: {link}")
            elif url.fragment and target.suffix == ".html" and unquote(url.fragment) not in parsed(target, cache).ids:
                broken.append(f"{page.relative_to(site)}: {link} (no such anchor)")
    assert not broken, "broken links in the site:\n" + "\n".join(broken[:40])


def test_the_readme_anchors_are_on_the_built_pages(site):
    for m in LINK.finditer(README.read_text()):
        url = urlsplit(m["target"])
        if url.fragment and url.path.startswith("docs/"):
            built = site / Path(url.path).relative_to("docs").with_suffix("") / "index.html"
            assert f'id="{url.fragment}"' in built.read_text(), f"README.md links to {m['target']}: no such anchor"
