"""The declared-vs-measured report on a few solvers: verdicts, findings, outputs; and the CLI commands on top."""

import json
import re

import pandas as pd
import pytest

from sdetoolkit.cli import main
from sdetoolkit.report import markdown, run_report, summary, verdict, write_report
from sdetoolkit.studies.study import Study

STUDIES = (
    Study(name="ode", kind="ode", problems=("gauss-1d",), solvers=("ddim", "dpmpp-2m", "dpmpp-3m", "ipndm-v"),
          steps=(32, 48, 64, 96, 128, 192, 256), options={"n_samples": 16}),
    Study(name="weak", kind="weak-exact", problems=("gauss-1d",), solvers=("euler-maruyama", "er-sde-3"),
          steps=(16, 24, 32, 48, 64, 96, 128, 192, 256)),
)


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    return out, run_report(out, studies=STUDIES, progress=False)


def test_verdicts_follow_claims_and_findings(report):
    _, result = report
    status = result.orders.set_index(["solver", "kind"]).status
    assert status[("ddim", "global (ODE)")] == "agrees"
    assert status[("dpmpp-2m", "global (ODE)")] == "agrees"
    assert status[("dpmpp-3m", "global (ODE)")].startswith("finding reproduced: measured 2, claimed 3")
    assert status[("euler-maruyama", "weak (exact W2)")] == "agrees"
    assert summary(result.orders)["agrees"] == 3


def test_a_row_the_window_leaves_open_is_refined(report):
    """ipndm-v's rate drifts in 32..256 (1.70 to 2.79): the report measures two more doublings and judges the fit of
    their fine end against the finding's asymptotic order 3. er-sde-3's weak error stalls beyond 256 steps (the
    official variance clip): the refined fit straddles the stall and is wider, so the row keeps its first fit."""
    out, result = report
    orders = result.orders.set_index(["solver", "kind"])
    ipndm = orders.loc[("ipndm-v", "global (ODE)")]
    assert ipndm.steps == "128..1024" and ipndm.status == "finding reproduced: measured 3, claimed 4"
    er_sde = orders.loc[("er-sde-3", "weak (exact W2)")]
    assert er_sde.steps == "16..256" and er_sde.status.startswith("finding inconclusive: measured 0 (in this window")
    assert (out / "ode-refined" / "rows.csv").exists() and (out / "weak-refined" / "rows.csv").exists()
    # the rows kept with the report are those its fits use
    assert set(result.rows["ode"].query("solver == 'ipndm-v'").steps) >= {512, 1024}
    assert set(result.rows["weak"].query("solver == 'er-sde-3'").steps) == set(STUDIES[1].steps)
    assert set(result.rows["ode"].query("solver == 'ddim'").steps) == set(STUDIES[0].steps)


def test_a_coupled_study_is_refined_cell_by_cell(tmp_path):
    """Strong orders couple every step count in one cell: a refined cell (8..256 here) replaces the standard one
    where it narrows the interval (er-sde-2's stall at the official clip), and the standard cell stays where the
    row is settled."""
    study = Study(name="strong", kind="strong", problems=("gauss-1d",), solvers=("er-sde-2", "ddpm"),
                  steps=(8, 16, 32, 64), options={"n_samples": 64})
    result = run_report(tmp_path, studies=(study,), progress=False)
    orders = result.orders.set_index("solver")
    assert orders.at["ddpm", "steps"] == "8..64"
    assert orders.at["er-sde-2", "steps"] == "8..256"
    assert orders.at["er-sde-2", "status"].startswith("finding")
    rows = result.rows["strong"]
    assert set(rows.query("solver == 'er-sde-2'").steps) == {8, 16, 32, 64, 128, 256}
    assert set(rows.query("solver == 'ddpm'").steps) == {8, 16, 32, 64}


def test_a_claim_outside_the_interval_without_a_finding_is_a_mismatch():
    row = dict(study="ode", solver="ddim", problem="gauss-1d", low=0.95, high=1.05, note="")
    assert verdict(dict(row, claimed=2.0)).startswith("MISMATCH")
    assert verdict(dict(row, claimed=0.5)) == "faster than claimed"
    assert verdict(dict(row, claimed=None)) == "no claim"
    # a recorded finding that the measurement no longer shows is flagged, not hidden
    stale = dict(study="ode", solver="dpmpp-3m", problem="gauss-1d", low=2.9, high=3.1, note="", claimed=3.0)
    assert verdict(stale).startswith("finding NOT reproduced")


def test_an_interval_that_cannot_tell_neighbouring_orders_apart_is_inconclusive():
    row = dict(study="ode", solver="ddim", problem="gauss-1d", note="", claimed=1.0)
    assert verdict(dict(row, low=0.6, high=1.4)) == "agrees"
    assert verdict(dict(row, low=0.4, high=1.4)) == "inconclusive: the interval also holds 0.5"
    assert verdict(dict(row, low=-1.0, high=3.0)) == "inconclusive: the interval also holds 0.5 and 1.5"
    finding = dict(study="ode", solver="dpmpp-3m", problem="gauss-1d", note="", claimed=3.0)
    assert verdict(dict(finding, low=1.6, high=2.4)).startswith("finding reproduced")
    assert verdict(dict(finding, low=1.6, high=3.2)) == ("finding inconclusive: measured 2, claimed 3; the interval "
                                                         "also holds 2.5 and 3")
    # either of a finding's orders reproduces it; a refined row names the asymptotic one when it misses both
    unipc = dict(study="ode", solver="unipc-bh1-p3", problem="gauss-1d", note="", claimed=4.0)
    for refined in (False, True):
        assert verdict(dict(unipc, low=1.8, high=2.2, refined=refined)) == "finding reproduced: measured 2, claimed 4"
        assert verdict(dict(unipc, low=2.8, high=3.2, refined=refined)) == ("finding reproduced: measured 2 (in this "
                                                                            "window 3), claimed 4")
    assert verdict(dict(unipc, low=3.6, high=4.4)) == "finding NOT reproduced: measured 2 (in this window 3), claimed 4"
    assert verdict(dict(unipc, low=3.6, high=4.4, refined=True)) == "finding NOT reproduced: measured 2, claimed 4"
    # a neighbour that is also the claim is named once
    sa = dict(study="strong", solver="sa-solver", problem="gauss-1d", note="", claimed=1.0, low=-0.2, high=1.2)
    assert verdict(dict(sa, refined=True)).endswith("the interval also holds 0 and 1")
    # findings belong to registered configurations: other parameters answer to the claim alone
    taylor = dict(study="ode", solver="dpmpp-3m", problem="gauss-1d", note="", claimed=3.0, low=2.9, high=3.1)
    assert verdict(dict(taylor, params='{"third_order_term": "taylor"}')) == "agrees"
    assert verdict(dict(taylor, params="{}")).startswith("finding NOT reproduced")


def test_outputs_are_written(report):
    out, result = report
    written = write_report(result, out)
    assert {p.name for p in written} >= {"orders.csv", "report.md", "report.tex", "ode.png", "ode.pdf"}
    assert all(p.stat().st_size > 0 for p in written)
    table = pd.read_csv(out / "orders.csv")
    assert len(table) == 6
    text = markdown(result)
    assert re.search(r"\| dpmpp-3m \| gauss-1d \| global \(ODE\) \| 32\.\.256 \| 3 \| [12]\.\d\d \| \[", text)
    assert r"\begin{tabular}" in (out / "report.tex").read_text()


def test_resumed_report_runs_nothing_new(report):
    out, first = report
    again = run_report(out, studies=STUDIES, progress=False)
    pd.testing.assert_frame_equal(again.orders, first.orders)
    assert sum(again.seconds.values()) < sum(first.seconds.values())


def test_cli_order_json(capsys):
    assert main(["order", "dpmpp-3m", "--problem", "gauss-1d", "--n-samples", "8", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["claimed"] == 3 and result["kind"] == "ode"
    rms = next(fit for fit in result["fits"] if fit["metric"] == "rms")
    assert rms["low"] <= 2 <= rms["high"] and rms["status"].startswith("finding reproduced")
    assert any(f.startswith("global order measured 2 vs claimed 3") for f in result["findings"])
    assert {row["steps"] for row in result["errors"]} == {32, 48, 64, 96, 128, 192, 256}


def test_cli_order_weak_and_strong_text(capsys):
    assert main(["order", "euler-maruyama", "--kind", "weak", "--steps", "16", "32", "64", "128", "256"]) == 0
    text = capsys.readouterr().out
    assert "euler-maruyama on gauss-1d, weak order (claimed 1)" in text
    assert re.search(r"w2_marginal .* -> agrees\n", text) and not re.search(r"kl_marginal .* -> ", text)
    assert main(["order", "euler-maruyama", "--kind", "strong", "--n-samples", "64", "--steps", "8", "16", "32",
                 "64"]) == 0
    assert "bootstrap interval" in capsys.readouterr().out


def test_cli_order_rejects_unknown_names():
    with pytest.raises(ValueError, match="unknown solver"):
        main(["order", "no-such-solver"])
    with pytest.raises(SystemExit):
        main(["order", "ddim", "--problem", "no-such-problem"])


def test_cli_study_writes_rows_fits_and_figures(tmp_path, capsys):
    path = tmp_path / "s.toml"
    path.write_text('[study]\nname = "tiny"\nkind = "ode"\nproblems = ["gauss-1d"]\nsolvers = ["ddim", "heun-lambda"]\n'
                    'steps = [16, 24, 32, 48]\noptions = { n_samples = 4 }\n\n[[figures]]\ntype = "convergence"\n'
                    'metric = "rms"\n\n[[figures]]\ntype = "work_precision"\nmetric = "rms"\n')
    assert main(["study", str(path)]) == 0
    out = tmp_path / "results" / "tiny"
    fits = pd.read_csv(out / "fits.csv")
    assert set(fits.solver) == {"ddim", "heun-lambda"}
    assert (out / "figures" / "convergence-0-gauss-1d.png").stat().st_size > 0
    assert (out / "figures" / "work_precision-1-gauss-1d.pdf").stat().st_size > 0
    assert "wrote" in capsys.readouterr().out
