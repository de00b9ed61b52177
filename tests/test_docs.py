"""The tables in docs/ are what the kept result files give: regenerating them changes nothing."""

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_docs_tables_match_the_kept_results():
    proc = subprocess.run(
        [sys.executable, "scripts/docs_tables.py", "render", "--check"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_intervals_quoted_in_prose_are_copies_of_rendered_ones():
    """An ``IQM [lo, hi]`` in README.md or in the prose of docs/*.md repeats a value that a
    rendered block (regenerated from the kept results) shows, so it cannot go stale alone."""
    interval = re.compile(r"-?\d+\.\d+\s+\[-?\d+\.\d+,\s*-?\d+\.\d+\]")
    block = re.compile(r"<!-- (\w+): [^>]*-->\n(.*?)<!-- /\1 -->", re.S)
    texts = {p.name: p.read_text() for p in [ROOT / "README.md", *(ROOT / "docs").glob("*.md")]}
    rendered = " ".join(" ".join(m[2].split()) for t in texts.values() for m in block.finditer(t))
    quoted = [
        (name, " ".join(m.split()))
        for name, t in texts.items()
        for m in interval.findall(block.sub("", t))
    ]
    assert len(quoted) >= 3  # the README's agent scores at least
    assert [q for q in quoted if q[1] not in rendered] == []


def _docs_tables():
    import importlib.util

    spec = importlib.util.spec_from_file_location("docs_tables", ROOT / "scripts/docs_tables.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_kept_probe_summaries_are_what_their_runs_give():
    import json

    from harness.probe import ProbeRun, summarize_probe

    same_json = _docs_tables().same_json
    files = sorted((ROOT / "docs" / "results").glob("probe*/*.json"))
    assert files
    for path in files:
        probe = json.loads(path.read_text())
        summary = summarize_probe([ProbeRun(**run) for run in probe["runs"]], probe["metric"])
        assert same_json({key: probe.get(key) for key in summary}, summary), path.name


def test_a_kept_probe_with_undefined_statistics_is_current(tmp_path):
    """Two policies that tie on every seed give NaN statistics (the same-seed interval, a
    one-seed std): the kept file, written from them, is what its runs give, not stale."""
    import json

    from harness.probe import ProbeRun, summarize_probe
    from mtl_envs.io import atomic_write_json

    tables = _docs_tables()
    runs = [ProbeRun(p, 0, 1.0, 0.5, 0.5, 1.0) for p in ("random", "equal")]
    probe = {"metric": "mean_nmse", "runs": [vars(r) for r in runs]}
    probe.update(summarize_probe(runs, "mean_nmse"))
    assert "NaN" in json.dumps(probe)
    atomic_write_json(tmp_path / "probe" / "tie.json", probe)
    assert tables.stale_probes(tmp_path) == []
    probe["runs"][0]["test"] = 0.6  # a run changed under its kept statistics
    atomic_write_json(tmp_path / "probe" / "tie.json", probe)
    assert [p.name for p, _ in tables.stale_probes(tmp_path)] == ["tie.json"]


def test_readme_python_examples_run(tmp_path, monkeypatch):
    """The README's Python blocks, run in order as a newcomer would paste them."""
    import re

    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    assert len(blocks) >= 4
    monkeypatch.chdir(tmp_path)  # SB3 and the envs write nothing into the repository
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, "README.md", "exec"), namespace)
    assert namespace["model"].num_timesteps >= 2_400


def test_kept_auxlabel_agent_runs_select_their_last_epoch():
    """docs/results.md: the kept AuxLabel PPO runs, recorded before agents read the live
    network for their best epoch, are right because each selects its last epoch."""
    import json

    runs = sorted(
        path
        for path in (ROOT / "docs" / "results").glob("*/AuxLabel*/ppo/seed*/result.json")
        if "-v0" in path.parts[-4]  # the v1 runs were made after the fix
    )
    assert len(runs) == 15
    for path in runs:
        result = json.loads(path.read_text())
        best, final = result["best"], result["final"]
        assert best["epoch"] == len(result["epochs"]), path
        assert {k: v for k, v in best.items() if k.startswith("test/")} == final, path


def test_kept_results_hold_no_machine_paths():
    """``keep`` drops where a run read its data and wrote its files; no kept file names a
    folder of the machine it ran on."""
    result = {
        "method": "ew",
        "env_id": "LossWeighting-Cubic-v1",
        "config": {"output_dir": "/home/a/results", "env_kwargs": {"data_root": "/d", "lr": 0.1}},
        "final": {"test/mean_nmse": 0.5},
    }
    assert _docs_tables().compact(result)["config"] == {"env_kwargs": {"lr": 0.1}}
    files = sorted((ROOT / "docs" / "results").rglob("*.json"))
    assert len(files) > 100
    absolute = re.compile(r'"output_dir"|"/[A-Za-z]')  # the key, or a string that is a path
    assert [p.relative_to(ROOT) for p in files if absolute.search(p.read_text())] == []
