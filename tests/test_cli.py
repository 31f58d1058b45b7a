import dataclasses
import json

import pytest
import torch

from sdetoolkit import get_problem, list_problems
from sdetoolkit.cli import main
from sdetoolkit.demo import compare_statistics, run_demo, transport_to_t_min


def test_problems_json(capsys):
    assert main(["problems", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [row["name"] for row in rows] == list_problems()


def test_schedules_listing(capsys):
    assert main(["schedules"]) == 0
    assert "vp-linear" in capsys.readouterr().out


def test_demo_recovers_the_exact_statistics():
    """PF-ODE transport of exact prior samples reproduces the exact t_min statistics within 4 standard errors."""
    table, nfe = run_demo("gmm-ring8-2d", n=1500, seed=1, rtol=1e-7)
    assert nfe > 10
    assert set(table["statistic"]) == {"mean", "covariance", "mode weight"}
    assert table["z"].abs().max() < 4.0


def test_demo_statistics_have_power():
    """The same statistics flag samples that stopped at the wrong time (t = 0.3 instead of t_min)."""
    problem = get_problem("gmm-ring8-2d")
    x = problem.prior().sample(1500, torch.Generator().manual_seed(1))
    early, _ = transport_to_t_min(dataclasses.replace(problem, t_min=0.3), x, rtol=1e-7)
    assert compare_statistics(problem, early)["z"].abs().max() > 10


def test_demo_command_prints_report(capsys):
    assert main(["demo", "--n", "200", "--rtol", "1e-5"]) == 0
    out = capsys.readouterr().out
    assert "max |z|" in out and "mode weight" in out


@pytest.mark.parametrize("argv", [["demo", "--problem", "nope"], ["frobnicate"]])
def test_bad_arguments(argv):
    with pytest.raises(SystemExit):
        main(argv)


def test_solvers_json_lists_claims_and_findings(capsys):
    """Every solver with its claim; findings of every kind, also where the paper claims no order."""
    assert main(["solvers", "--json"]) == 0
    rows = {row["name"]: row for row in json.loads(capsys.readouterr().out)}
    assert rows["euler-maruyama"]["claimed_order"] == 0.5
    assert any("strong order measured 1 vs claimed 0.5" in f for f in rows["euler-maruyama"]["findings"])
    assert any("weak order measured 1 vs no claim" in f for f in rows["sde-dpmpp-3m"]["findings"])
    assert rows["ddim"]["findings"] == []
