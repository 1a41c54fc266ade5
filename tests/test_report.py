"""Tests for ``frlr report`` (and ``--ncd-every``): a tiny comparison and a tiny sweep on the
bundled digits produce a complete report (every figure a valid PNG, the HTML offline and
referencing only files that exist, the Markdown holding the table); a failing figure loses
nothing else; a running comparison is reported too; bad directories give clear errors."""

from __future__ import annotations

import json
import re
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from frlr.cli import main
from frlr.experiments.compare import RunOptions
from frlr.experiments.sweep import sweep
from frlr.ncd import read_history
from frlr.report import build_report
from frlr.report.document import Figure, Heading, Table, to_html, to_markdown
from frlr.report.embedding import select_points
from frlr.train import config_differences, resolve_config, train

TINY = ["--dataset", "digits", "--arch", "mlp", "--preset", "cpu", "--threads", "1"]


def _pngs_are_valid(folder: Path) -> list[str]:
    names = sorted(p.name for p in folder.glob("*.png"))
    for name in names:
        with Image.open(folder / name) as image:
            image.verify()
        with Image.open(folder / name) as image:
            assert image.format == "PNG" and min(image.size) > 200
    return names


def _html_references(html: str) -> list[str]:
    return re.findall(r'(?:src|href)="([^"]+)"', html)


@pytest.fixture(scope="module")
def compared(tmp_path_factory):
    """sr vs hs-sr on digits, 2 seeds, 2 epochs, NCD recorded; the report comes at the end."""
    out = tmp_path_factory.mktemp("compare") / "cmp"
    argv = ["compare", *TINY, "--epochs", "2", "--losses", "sr,hs-sr", "--seeds", "2"]
    assert main([*argv, "--ncd-every", "3", "--out", str(out)]) == 0
    return out


def test_compare_ends_with_a_complete_report(compared):
    report = compared / "report"
    names = _pngs_are_valid(report)
    assert names == ["ncd.png", "test_top1.png", "train_loss.png", "tsne.png"]
    markdown = (report / "report.md").read_text()
    assert "| loss | top-1 (%) | top-5 (%) | p vs SR | runs | wall time / run (s) |" in markdown
    assert "| HS-SR |" in markdown and "| SR |" in markdown and "Not made" not in markdown
    for name in names:
        assert f"]({name})" in markdown
    html = (report / "report.html").read_text()
    references = _html_references(html)
    assert sorted(references) == names
    assert all((report / ref).is_file() for ref in references)
    assert "<script" not in html and "http" not in " ".join(references)
    assert "HS-SR" in html and "<table>" in html
    # the command line as typed, and an equivalent one rebuilt from the configs
    saved = json.loads((compared / "results.json").read_text())
    assert saved["command"].startswith("frlr compare --dataset digits")
    assert saved["command"] in markdown
    equivalent = next(line for line in markdown.splitlines() if line.startswith("frlr compare --l"))
    assert equivalent.startswith("frlr compare --losses sr,hs-sr --preset cpu --seeds 2")
    assert "--dataset digits --arch mlp --epochs 2" in equivalent and "--ncd-every 3" in equivalent
    assert "frlr train --preset cpu --loss hs-sr --seed 1" in markdown
    assert "| torch |" in markdown and "| cpu_count |" in markdown


def test_ncd_every_records_the_training_steps(compared):
    records = read_history(compared / "sr-seed0" / "ncd.jsonl")
    steps = [r["step"] for r in records]
    assert steps == list(range(0, steps[-1] + 1, 3)) and len(steps) > 5
    assert {r["loss"] for r in records} == {"sr"}
    assert all(r["gradient_ratio"] == pytest.approx(1.0) for r in records)  # SR: exactly 1
    assert not config_differences({"ncd_every": 3}, {"ncd_every": 0})  # not a result field


def test_a_resumed_run_keeps_one_ncd_record_per_step(tmp_path):
    config = resolve_config("cpu", dataset="digits", arch="mlp", epochs=2, threads=1)
    config.loss, config.ncd_every, config.out = "lr", 5, str(tmp_path / "run")
    train(config, stop_after=1, log=None)
    path = tmp_path / "run" / "ncd.jsonl"
    first = [r["step"] for r in read_history(path)]
    with path.open("a") as handle:  # steps the killed run wrote after its checkpoint
        handle.write(json.dumps({**read_history(path)[-1], "step": 10_000}) + "\n")
    train(config, resume=True, log=None)
    steps = [r["step"] for r in read_history(path)]
    assert steps[: len(first)] == first and steps == sorted(set(steps))
    assert steps == list(range(0, steps[-1] + 1, 5)) and steps[-1] > first[-1]


def test_a_sweep_report_has_the_sweep_plot(tmp_path):
    base = resolve_config("cpu", dataset="digits", arch="mlp", epochs=1, threads=1)
    out = tmp_path / "sweep"
    sweep(base, "r", "0,2", 2, out, run=RunOptions(preset="cpu", log=None, command="frlr sweep x"))
    build_report(out, log=None)  # the command chains the report: frlr sweep ... then report
    report = out / "report"
    names = _pngs_are_valid(report)
    assert names == ["sweep_r.png", "test_top1.png", "train_loss.png", "tsne.png"]
    assert (out / "sweep_r.png").exists()
    markdown = (report / "report.md").read_text()
    assert "| r | top-1 (%) | top-5 (%) | p vs r = 2 |" in markdown
    assert "| 0 |" in markdown and "frlr sweep --param r --values 0,2 --loss ss-lr" in markdown
    html = (report / "report.html").read_text()
    assert sorted(_html_references(html)) == names


def test_a_failing_figure_is_a_warning_and_loses_nothing_else(compared, tmp_path, monkeypatch):
    copy = tmp_path / "cmp"
    shutil.copytree(compared, copy, ignore=shutil.ignore_patterns("report"))

    def broken(*args, **kwargs):
        raise RuntimeError("no features today")

    monkeypatch.setattr("frlr.report.embedding.run_features", broken)
    with pytest.warns(UserWarning, match="tsne.png: RuntimeError: no features today"):
        build_report(copy, log=None)
    report = copy / "report"
    assert _pngs_are_valid(report) == ["ncd.png", "test_top1.png", "train_loss.png"]
    markdown = (report / "report.md").read_text()
    assert "## Not made" in markdown and "no features today" in markdown
    html = (report / "report.html").read_text()
    assert all((report / ref).is_file() for ref in _html_references(html))


def test_a_running_comparison_is_reported_with_its_unfinished_runs(compared, tmp_path):
    copy = tmp_path / "cmp"
    shutil.copytree(compared, copy, ignore=shutil.ignore_patterns("report", "results.*"))
    (copy / "hs-sr-seed1" / "result.json").unlink()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        build_report(copy, tsne=False, log=None)
    markdown = (copy / "report" / "report.md").read_text()
    assert "3 of 4 runs finished" in markdown and "| HS-SR |" in markdown
    assert "| 1 of 2 |" in markdown and "in progress (2 of 2 epochs)" in markdown
    assert "t-SNE skipped" in markdown and "was not recorded" in markdown


def test_one_run_directory_is_reported_alone(compared, tmp_path):
    run = tmp_path / "hs-sr-seed0"
    shutil.copytree(compared / "hs-sr-seed0", run)
    build_report(run, tsne=False, log=None)
    markdown = (run / "report" / "report.md").read_text()
    assert "One run" in markdown and "| HS-SR |" in markdown and "frlr compare" not in markdown
    assert f"frlr train --preset paper --loss hs-sr --seed 0 --out {run} --dataset digits" in (
        markdown
    )


def test_bad_run_dirs_give_clear_errors(tmp_path, capsys):
    with pytest.raises(FileNotFoundError, match="is not a directory"):
        build_report(tmp_path / "missing", log=None)
    assert main(["report", str(tmp_path)]) == 2
    assert "holds no runs" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["report", str(tmp_path), "--tsne-points", "0"])
    assert "expected a positive integer" in capsys.readouterr().err


def test_help_names_report_and_sweep(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    assert "sweep" in text and "report" in text
    with pytest.raises(SystemExit):
        main(["report", "--help"])
    text = capsys.readouterr().out
    assert "RUN_DIR" in text and "--no-tsne" in text
    with pytest.raises(SystemExit):
        main(["compare", "--help"])
    assert "--no-report" in capsys.readouterr().out


def test_tsne_points_are_the_first_classes_and_reproducible():
    labels = np.repeat(np.arange(8), 50)[::-1].copy()
    classes, chosen = select_points(labels, classes=3, per_class=20)
    assert classes == [0, 1, 2] and len(chosen) == 60
    assert sorted(set(labels[chosen])) == [0, 1, 2]
    assert np.array_equal(chosen, select_points(labels, classes=3, per_class=20)[1])


def test_markdown_and_html_escape_their_content():
    blocks = [
        Heading("a <b> & c", 1),
        Table(["x|y", "z"], [["1|2", "<3>"]], note="n"),
        Figure("f.png", "caption & more"),
    ]
    markdown = to_markdown(blocks)
    assert "| x\\|y | z |" in markdown and "![caption & more](f.png)" in markdown
    html = to_html(blocks, "t")
    assert "<h1>a &lt;b&gt; &amp; c</h1>" in html and "<td>&lt;3&gt;</td>" in html
    assert '<img src="f.png"' in html
