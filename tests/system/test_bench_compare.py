"""benchmarks.compare reads the ratios both benchmark formats print (the one-tier benchmarks of
before the redesign and the two-tier ones), and its report names every loss, gap and failure."""
from __future__ import annotations

import pytest

from benchmarks import compare

pytestmark = pytest.mark.embedded_only

OLD_LIFECYCLE = """\
round 1: (a)   163.1/s  (a')   182.4/s  (b)   144.9/s  (c)   468.2/s
  ratio (a)/(b) = 1.13x   (goal >= 1.0x)
  ratio (a')/(b) = 1.26x  (the tracking alone vs. naive tracking)
  ratio (a)/(c) = 0.35x   (tracking overhead vs. the floor)
"""
NEW_LIFECYCLE = """\
                                                     embedded         real
------------------------------------------------  -----------  -----------
(a) proc tracked lifecycle                              264.5         35.6
ratio (a)/(b)  (goal >= 1.0x)                           0.97x        0.46x
ratio (a')/(b) (the tracking alone vs. naive)           0.69x        0.60x
ratio (a)/(c)  (tracking overhead vs. the floor)        0.91x        0.07x
"""
OLD_STATUS = """\
 processes | /api/status           | counts+oldest aggregation           | naive count() loop           | needs attention
    10,000 |    19 trips    0.750s |                   5 trips    0.500s |           28 trips    0.250s |              20
"""
NEW_STATUS = """\
tier      processes        /api/status  counts+oldest aggregation  naive count() loop  needs attention  naive / aggregation time
embedded     10,000  23 trips, 0.600 s           6 trips, 0.400 s   35 trips, 0.200 s               20                     0.50x
real         10,000  23 trips, 0.300 s           6 trips, 0.200 s   35 trips, 0.300 s               20                     1.50x
"""
OLD_SWEEP = "ratio naive / sweep           1.1x                         200x\n"
NEW_SWEEP = """\
embedded  ratio naive / sweep      0.7x                         200x
real      ratio naive / sweep     11.8x                       1,000x
"""
OLD_DATAFIX = """\
speedup vs save loop:        1.5x   (goal >= 10x)
speed vs bare update:       0.24x   (goal >= 0.5x)
"""
NEW_DATAFIX = """\
embedded  speedup vs save loop (goal >= 10x)             1.35x
embedded  speed vs bare update (goal >= 0.5x)            0.07x
real      speedup vs save loop (goal >= 10x)             1.81x
"""


def test_lifecycle_ratios_are_read_from_the_old_lines_and_from_the_tier_column_of_the_new_table():
    assert compare.parse_lifecycle(OLD_LIFECYCLE, "embedded") == {"(a)/(b)": 1.13, "(a')/(b)": 1.26,
                                                                   "(a)/(c)": 0.35}
    assert compare.parse_lifecycle(NEW_LIFECYCLE, "real") == {"(a)/(b)": 0.46, "(a')/(b)": 0.60,
                                                              "(a)/(c)": 0.07}
    assert compare.parse_lifecycle(NEW_LIFECYCLE, "embedded")["(a)/(b)"] == 0.97


def test_lifecycle_ratios_come_from_the_printed_median_rates_when_both_formats_print_them():
    """Rates carry more digits than the printed ratios: real-tier (a)/(c) of 33.8/450.3 is
    0.075, which both revisions would print as 0.07 or 0.08."""
    old = ("  (a) proc tracked lifecycle       33.8 processes/s\n"
           "  (a') proc, sweep-only monitor     35.5 processes/s\n"
           "  (b) naive save() tracking        70.4 processes/s\n"
           "  (c) bare Celery, no tracking    450.3 processes/s\n"
           "  ratio (a)/(b) = 0.48x   (goal >= 1.0x)\n")
    assert compare.parse_lifecycle(old, "embedded") == pytest.approx(
        {"(a)/(b)": 33.8 / 70.4, "(a')/(b)": 35.5 / 70.4, "(a)/(c)": 33.8 / 450.3})
    new = ("                                      embedded         real\n"
           "(a) proc tracked lifecycle                264.5         39.7\n"
           "(a') proc, sweep-only monitor             250.0         29.7\n"
           "(b) naive save() tracking                 270.0         69.2\n"
           "(c) bare Celery, no tracking              540.0        500.8\n"
           "ratio (a)/(b)  (goal >= 1.0x)              0.98x        0.57x\n")
    assert compare.parse_lifecycle(new, "real") == pytest.approx(
        {"(a)/(b)": 39.7 / 69.2, "(a')/(b)": 29.7 / 69.2, "(a)/(c)": 39.7 / 500.8})
    assert compare.parse_lifecycle(new, "embedded")["(a')/(b)"] == pytest.approx(250.0 / 270.0)


def test_status_ratios_are_the_naive_loops_time_over_each_of_proc_s_in_both_formats():
    old = compare.parse_status(OLD_STATUS, "embedded")
    assert old == pytest.approx({"naive / aggregation time @ 10,000": 0.5,
                                 "naive / /api/status time @ 10,000": 0.25 / 0.75})
    new = compare.parse_status(NEW_STATUS, "real")
    assert new == pytest.approx({"naive / aggregation time @ 10,000": 1.5,
                                 "naive / /api/status time @ 10,000": 1.0})


def test_sweep_and_datafix_ratios_are_read_for_the_tier_asked_only():
    assert compare.parse_sweep(OLD_SWEEP, "embedded") == {"naive / sweep time": 1.1,
                                                          "naive / sweep documents read": 200}
    assert compare.parse_sweep(NEW_SWEEP, "real") == {"naive / sweep time": 11.8,
                                                      "naive / sweep documents read": 1000}
    assert compare.parse_datafix(OLD_DATAFIX, "embedded") == {"speedup vs save loop": 1.5,
                                                              "speed vs bare update": 0.24}
    assert compare.parse_datafix(NEW_DATAFIX, "real") == {"speedup vs save loop": 1.81}


def _results(old: dict, new: dict, errors=()):
    pair = {"old": compare.Result(ratios=old), "new": compare.Result(ratios=new, errors=list(errors))}
    return {("sweep", "embedded"): pair}


def test_a_loss_over_ten_percent_fails_and_a_gain_passes(capsys):
    assert compare.report(_results({"r": [1.0, 1.0, 1.2]}, {"r": [0.95, 0.91, 0.9]})) is True
    assert compare.report(_results({"r": [1.0]}, {"r": [1.5]})) is True
    assert "PASS (gain > 10%)" in capsys.readouterr().out
    assert compare.report(_results({"r": [1.0, 1.0]}, {"r": [0.85, 0.89]})) is False
    assert "FAIL" in capsys.readouterr().out


def test_a_ratio_only_one_revision_prints_and_a_failed_run_are_reported_not_dropped(capsys):
    ok = compare.report(_results({"r": [1.0], "gone": [2.0]}, {"r": [1.0], "added": [3.0]},
                                 errors=["round 1: exit 1 (log x.log)"]))
    out = capsys.readouterr().out
    assert ok is False
    assert "only old prints it" in out and "only new prints it" in out
    assert "FAIL: round 1: exit 1 (log x.log)" in out


def test_an_old_benchmark_without_tiers_runs_on_the_real_tier_under_the_shim(tmp_path):
    (tmp_path / "benchmarks").mkdir()
    (tmp_path / "benchmarks" / "bench_status.py").write_text("import argparse\n")
    tree = compare.Tree("old", tmp_path)
    assert compare.command(tree, "status", "embedded", True)[1:] == [
        "-m", "benchmarks.bench_status", "--sizes", "10000", "--repeat", "3"]
    real = compare.command(tree, "status", "real", True)
    assert real[1:3] == ["-c", compare.REAL_SHIM] and real[3] == "benchmarks.bench_status"
    (tmp_path / "benchmarks" / "bench_status.py").write_text("add_tier_argument(parser)\n")
    assert compare.command(tree, "status", "real", True)[1:] == [
        "-m", "benchmarks.bench_status", "--sizes", "10000", "--real-sizes", "10000", "--tier", "real",
        "--repeat", "3"]


def test_the_shim_points_an_old_benchmarks_embedded_uris_at_the_real_server(tmp_path):
    import subprocess
    import sys

    (tmp_path / "fake_bench.py").write_text(
        "import sys\nfrom proc import config\n"
        "print(config.configure(mongodb_uri='mongomock://localhost/proc_bench_x').mongodb_uri, sys.argv[1:])\n")
    out = subprocess.run([sys.executable, "-c", compare.REAL_SHIM, "fake_bench", "--n", "5"], cwd=tmp_path,
                         env={"PROC_COMPARE_REAL_URI": "mongodb://127.0.0.1:1/", "PATH": ""},
                         capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "mongodb://127.0.0.1:1/proc_bench_x ['--n', '5']", out.stderr


def test_bench_from_measures_each_revision_with_one_trees_benchmark_scripts(tmp_path):
    """``--bench-from old``: the old tree's benchmark (its ``benchmarks`` package, helpers
    included) runs against the code of the revision it measures (cwd), on both tiers."""
    import subprocess
    import sys

    scripts = tmp_path / "old" / "benchmarks"
    scripts.mkdir(parents=True)
    (scripts / "__init__.py").write_text("")
    (scripts / "common.py").write_text("WHOSE = 'old helpers'\n")
    (scripts / "bench_status.py").write_text(
        "import sys\nimport revision\nfrom benchmarks.common import WHOSE\nfrom proc import config\n"
        "uri = config.configure(mongodb_uri='mongomock://localhost/proc_bench_x').mongodb_uri\n"
        "print(revision.NAME, WHOSE, uri, sys.argv[1:])\n")
    measured = tmp_path / "new"
    measured.mkdir()
    (measured / "revision.py").write_text("NAME = 'new code'\n")
    tree = compare.Tree("new", measured, bench=tmp_path / "old")
    assert compare.Tree("new", measured).script("status") == measured / "benchmarks" / "bench_status.py"
    assert tree.script("status") == scripts / "bench_status.py" and not tree.two_tier("status")
    for tier, uri in (("embedded", "mongomock://localhost/proc_bench_x"),
                      ("real", "mongodb://127.0.0.1:1/proc_bench_x")):
        cmd = compare.command(tree, "status", tier, True)
        out = subprocess.run([sys.executable, *cmd[1:]], cwd=measured, capture_output=True, text=True,
                             env={"PROC_COMPARE_REAL_URI": "mongodb://127.0.0.1:1/", "PATH": ""}, timeout=60)
        assert out.stdout.strip() == f"new code old helpers {uri} ['--sizes', '10000', '--repeat', '3']", \
            out.stderr


def test_the_call_counts_are_parsed_and_compared_on_the_embedded_tier_only():
    text = ("  (a') proc, sweep-only monitor         9795\n"
            "  ratio calls (b)/(a')  1.102x  (naive's work over proc's: higher is better)\n"
            "  ratio calls (c)/(a')  0.459x  (the floor's work over proc's)\n")
    assert compare.parse_calls(text, "embedded") == {"calls (b)/(a')": 1.102, "calls (c)/(a')": 0.459}
    assert "calls" in compare.EMBEDDED_ONLY and "calls" in compare.NAMES


def test_the_layout_prelude_serves_either_layouts_names_against_either_tree(tmp_path):
    """A benchmark script of one layout runs against code of the other (``--bench-from``): in
    this tree (layers) the flat names are served, in a flat tree the layered ones."""
    import subprocess
    import sys

    flat_names = ("from proc import db, dispatch\nfrom proc.bulk import run\nimport proc.stuck\n"
                  "print(db.__name__, dispatch.__name__, run.__module__, proc.stuck.__name__)\n")
    out = subprocess.run([sys.executable, "-c", compare.LAYOUT + compare.LAYOUT + flat_names],
                         capture_output=True, text=True, timeout=60)
    assert out.stdout.split() == ["proc.store.db", "proc.run.dispatch", "proc.ops.bulk", "proc.monitor.stuck"], \
        out.stderr

    flat = tmp_path / "proc"
    flat.mkdir()
    for name in ("__init__", "db", "dispatch", "machine", "transitions", "monitor", "stuck"):
        (flat / f"{name}.py").write_text(f"WHERE = 'flat {name}'\n")
    layered_names = ("from proc.store import db\nfrom proc.run import dispatch\nfrom proc.machine import many\n"
                     "import proc.monitor.stuck\nfrom proc import machine, monitor\n"
                     "print(db.WHERE, dispatch.WHERE, many.WHERE, proc.monitor.stuck.WHERE, machine.WHERE,"
                     " monitor.WHERE, sep=',')\n")
    # -S: no site-packages, whose editable install of this tree would answer for proc.run.
    out = subprocess.run([sys.executable, "-S", "-c", compare.LAYOUT + layered_names], cwd=tmp_path,
                         capture_output=True, text=True, timeout=60)
    assert out.stdout.strip().split(",") == ["flat db", "flat dispatch", "flat transitions", "flat stuck",
                                             "flat machine", "flat monitor"], out.stderr
