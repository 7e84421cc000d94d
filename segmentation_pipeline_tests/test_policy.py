"""Customer-level ratings and policy rules: the rules file, the condition language, the rating, and a real run on an
export where low-behaviour customers carry PEP, previously-reported and CTR flags (warehouse, explain, API)."""

from __future__ import annotations

import json
import shutil
import urllib.request
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest

from segmentation_pipeline import cli
from segmentation_pipeline.config import DEFAULT_RULES
from segmentation_pipeline.orchestration.resources import SegmentationSettings
from segmentation_pipeline.runner import run_pipeline
from segmentation_pipeline.stages.customers import CustomerBatch
from segmentation_pipeline.stages.policy import (
    Policy,
    PolicyError,
    floor_violations,
    governance,
    load_policy,
    parse_policy,
    rank_inversions,
    rate,
)
from segmentation_pipeline.stages.tiering import INDICATORS, TIERS
from segmentation_pipeline.synthetic import generate_export, write_export
from segmentation_pipeline.warehouse import Warehouse
from segmentation_pipeline.warehouse.models import load_model
from segmentation_pipeline_tests.api_fixtures import API_KEY, file_records, start_server, stop_server
from segmentation_pipeline_tests.snapshot_helpers import published_state

EXTRA_RULE = """
[[rules]]
id = "many_alerts"
condition = "num_alerts >= 9 and cash_share > 0.2"
min_tier = "Medium"
rationale = "Repeated monitoring alerts on a cash-heavy account."
"""


def _policy(condition: str, min_tier: str = "High") -> Policy:
    return parse_policy({"version": "t", "rules": [{"id": "r", "condition": condition, "min_tier": min_tier,
                                                    "rationale": "test"}]}, source="test.toml")  # fmt: skip


def _batch(**columns: list[object]) -> tuple[CustomerBatch, np.ndarray]:
    """A small batch and its indicator matrix (flags blank -> 0, as the scorer builds it)."""
    n = len(next(iter(columns.values())))
    numbers = {k: np.array([np.nan if v is None else v for v in vs], dtype=float)
               for k, vs in columns.items() if k not in ("occupation", "gender")}  # fmt: skip
    categories = {k: np.array(vs, dtype=object) for k, vs in columns.items() if k in ("occupation", "gender")}
    batch = CustomerBatch(customer_ids=np.arange(n), numbers=numbers, categories=categories)
    indicators = np.full((n, len(INDICATORS)), np.nan)
    for position, name in enumerate(INDICATORS):
        if name in numbers:
            indicators[:, position] = numbers[name]
    for flag in ("is_pep", "high_income_hw", "ctr_match", "previously_reported"):
        column = indicators[:, INDICATORS.index(flag)]
        column[np.isnan(column)] = 0.0
    return batch, indicators


# --- the rules file -------------------------------------------------------------------------------------------


def test_the_bundled_rules_are_the_documented_defaults() -> None:
    policy = load_policy()
    assert [(r.id, r.condition, r.min_tier) for r in policy.rules] == [
        ("pep", "is_pep == 1", "High"),
        ("previously_reported", "previously_reported == 1", "High"),
        ("ctr_match", "ctr_match == 1", "Medium"),
        ("hnw_housewife", "high_income_hw == 1", "Medium"),
    ]
    assert policy.version and all(r.rationale for r in policy.rules)
    assert Policy.from_dict(policy.to_dict()).sha256 == policy.sha256
    assert load_policy(DEFAULT_RULES).sha256 == policy.sha256


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ('[[rules]]\nid="x"\ncondition="is_pep == 1"\nmin_tier="High"\nrationale="r"', "needs a version"),
        ('version="1"\n[[rules]]\nid="big"\ncondition="balance > 5"\nmin_tier="High"\nrationale="r"',
         "rule 'big': unknown column 'balance'"),
        ('version="1"\n[[rules]]\nid="t"\ncondition="is_pep == 1"\nmin_tier="Critical"\nrationale="r"',
         "rule 't': min_tier 'Critical' is not one of High, Medium"),
        ('version="1"\n[[rules]]\nid="s"\ncondition="is_pep =="\nmin_tier="High"\nrationale="r"',
         "rule 's': condition `is_pep ==` does not parse"),
        ('version="1"\n[[rules]]\nid="c"\ncondition="__import__(\'os\').system(\'x\')"\nmin_tier="High"\n'
         'rationale="r"', "rule 'c': `__import__('os').system('x')` is not allowed"),
        ('version="1"\n[[rules]]\nid="k"\ncondition="occupation > \'a\'"\nmin_tier="High"\nrationale="r"',
         "rule 'k': text can only be compared with == or !="),
        ('version="1"\n[[rules]]\nid="m"\ncondition="exp_volume == \'high\'"\nmin_tier="High"\nrationale="r"',
         "rule 'm': `==` compares a number with text"),
        ('version="1"\n[[rules]]\nid="a"\ncondition="is_pep == 1"\nmin_tier="High"\nrationale="r"\n'
         '[[rules]]\nid="a"\ncondition="ctr_match == 1"\nmin_tier="High"\nrationale="r"',
         "rule 'a': the id is used by an earlier rule"),
        ('version="1"\n[[rules]]\nid="e"\ncondition="is_pep == 1"\nmin_tier="High"\nrationale="r"\nweight=2',
         "rule 'e': unknown key 'weight'"),
        ('version="1"\n[[rules]]\nid="n"\ncondition="is_pep == 1"\nmin_tier="High"', "rule 'n': needs rationale"),
        ("version = ", "is not valid TOML"),
    ],
)
def test_a_bad_rules_file_is_refused_in_one_line_naming_the_rule(tmp_path: Path, body: str, expected: str) -> None:
    path = tmp_path / "bank_rules.toml"
    path.write_text(body)
    with pytest.raises(PolicyError) as caught:
        load_policy(path)
    message = str(caught.value)
    assert message.startswith("bank_rules.toml: ") and expected in message, message
    assert "\n" not in message and "Traceback" not in message


def test_a_missing_or_unreadable_rules_file_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="rules file not found"):
        load_policy(tmp_path / "absent.toml")
    with pytest.raises(PolicyError, match="is a folder"):
        load_policy(tmp_path)


# --- conditions and ratings -------------------------------------------------------------------------------------


def test_conditions_use_three_valued_logic_and_fold_text() -> None:
    batch, indicators = _batch(
        num_alerts=[9, None, 2, None], is_pep=[1, 0, None, 1], age=[20, 50, None, 70],
        occupation=["Housewife", " HOUSEWIFE ", None, "Pension"], exp_volume=[10, 0, 5, None],
        actual_volume=[30, 10, 5, 7],
    )  # fmt: skip
    cases = {
        "num_alerts >= 5": [True, False, False, False],  # unknown never fires
        "not (num_alerts < 5)": [True, False, False, False],  # not unknown is unknown
        "num_alerts >= 5 or is_pep == 1": [True, False, False, True],  # unknown or true is true
        "num_alerts >= 5 and is_pep == 0": [False, False, False, False],
        "is_pep == 0": [False, True, True, False],  # a blank flag is "not flagged"
        "occupation == 'housewife'": [True, True, False, False],
        "occupation in ['pension', 'student']": [False, False, False, True],
        "occupation != 'housewife'": [False, False, False, True],
        "actual_volume > 2 * exp_volume": [True, True, False, False],
        "actual_volume / exp_volume > 2": [True, False, False, False],  # x / 0 is unknown, not infinite
        "18 <= age < 60": [True, True, False, False],
        "is_pep": [True, False, False, True],
    }
    for condition, expected in cases.items():
        assert _policy(condition).matches(batch, indicators)[:, 0].tolist() == expected, condition


def test_the_rating_is_the_riskiest_of_segment_score_and_rule_floors() -> None:
    policy = parse_policy({"version": "t", "rules": [
        {"id": "pep", "condition": "is_pep == 1", "min_tier": "High", "rationale": "r"},
        {"id": "ctr", "condition": "ctr_match == 1", "min_tier": "Medium", "rationale": "r"},
    ]}, source="t")  # fmt: skip
    batch, indicators = _batch(is_pep=[0, 0, 1, 0, 1], ctr_match=[0, 1, 1, 1, 0])
    segment = np.array([2, 2, 2, 0, 1], dtype=np.int8)
    score = np.array([1, 2, 2, 2, 0], dtype=np.int8)
    rating = rate(segment, score, policy.matches(batch, indicators), policy)
    assert [TIERS[r] for r in rating.risk_rank] == ["Medium", "Medium", "High", "High", "High"]
    assert rating.basis.tolist() == ["score", "rule", "rule", "segment", "score"]
    assert rating.raised(policy).tolist() == [[False, False], [False, True], [True, True], [False, False],
                                              [False, False]]  # fmt: skip
    assert floor_violations(policy, batch, indicators, np.array(["Low", "Low", "Medium", "High", None])) == {
        "ctr": 1, "pep": 2}  # fmt: skip
    rows = {(r["measure"], r["item"]): r["customers"] for r in governance(rating, np.arange(5.0), policy)}
    assert rows[("rule_raised", "pep")] == 1 and rows[("rule_raised", "ctr")] == 2
    assert rows[("tier_mix_after_rules", "High")] == 3


def test_rank_inversions_count_customers_rated_below_a_lower_score() -> None:
    scores = np.array([5.0, 1.0, 3.0, 0.5, 2.0])
    assert rank_inversions(scores, np.array([0, 0, 1, 2, 2])) == 2  # 3.0 (Medium) and 2.0 (Low) beat 1.0 (High)
    assert rank_inversions(scores, np.array([0, 2, 0, 2, 1])) == 0


# --- the shared trained warehouse: ratings as published ----------------------------------------------------------


def test_published_ratings_never_sit_below_their_segment_and_have_no_inversions(trained_warehouse) -> None:  # noqa: ANN001
    with duckdb.connect(str(trained_warehouse.path), read_only=True) as connection:
        ratings = connection.execute(
            "SELECT risk_tier, segment_tier, tier_before_rules, rating_basis, risk_score, rule_ids "
            "FROM cluster_assignments").df()  # fmt: skip
        figures = dict(connection.execute(
            "SELECT measure || ':' || item, customers FROM rating_governance").fetchall())  # fmt: skip
        profiles = connection.execute("SELECT risk_tier, tier_score_boundary FROM segment_profiles").df()
    rank = {t: i for i, t in enumerate(TIERS)}
    final, segment, before = (ratings[c].map(rank).to_numpy() for c in ("risk_tier", "segment_tier",
                                                                         "tier_before_rules"))  # fmt: skip
    assert (final <= before).all() and (before <= segment).all()
    assert figures["rank_inversions:"] == 0 == rank_inversions(ratings["risk_score"].to_numpy(), before)
    assert figures["rank_inversions_segment_only:"] > 0  # the cluster tier alone had them (issue 12's finding)
    high = profiles.loc[profiles["risk_tier"] == "High", "tier_score_boundary"].iloc[0]
    assert (ratings.loc[ratings["risk_score"] >= high, "risk_tier"] == "High").all()
    assert sum(figures[f"tier_mix_after_rules:{t}"] for t in TIERS) == len(ratings)
    pep = ratings["rule_ids"].map(lambda ids: "pep" in list(ids))
    assert pep.any() and (ratings.loc[pep, "risk_tier"] == "High").all()


# --- a real run on low-behaviour customers carrying flags --------------------------------------------------------


@pytest.fixture(scope="module")
def flagged(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """600 synthetic customers; 45 of the quietest get PEP, 45 previously reported, 45 a CTR match (and a rules
    file = the bundled rules + one more rule, to show that a rule is added without code)."""
    directory = tmp_path_factory.mktemp("flagged")
    source = write_export(generate_export(600, seed=11), directory / "flagged.csv")
    table = pd.read_csv(source, dtype=str, keep_default_na=False)
    volume = pd.to_numeric(table["ActualVolume"], errors="coerce").fillna(0)
    quiet = volume.groupby(table["CustomerID"]).sum().sort_values().index[:135].tolist()
    groups = {"isPep": quiet[:45], "PreviouslyReported": quiet[45:90], "CTRMatch": quiet[90:]}
    for column, ids in groups.items():
        table[column] = "0"  # only the chosen customers carry the flag
        table.loc[table["CustomerID"].isin(ids), column] = "1"
    table.columns = [c.removesuffix(".1") for c in table.columns]  # the export repeats DateofBirth
    table.to_csv(source, index=False)
    rules = directory / "bank_rules.toml"
    rules.write_text(DEFAULT_RULES.read_text() + EXTRA_RULE)
    warehouse = directory / "warehouse.duckdb"
    summary = run_pipeline(source, warehouse, settings=SegmentationSettings(n_init=3, rules_file=str(rules)))
    assert summary.success, summary.error
    return {"directory": directory, "source": source, "warehouse": warehouse, "groups": groups, "rules": rules}


def _ratings(warehouse: Path) -> pd.DataFrame:
    with duckdb.connect(str(warehouse), read_only=True) as connection:
        return connection.execute(
            "SELECT customer_id, risk_tier, tier_before_rules, rating_basis, rule_ids, risk_score "
            "FROM cluster_assignments").df().set_index("customer_id")  # fmt: skip


def test_flagged_customers_are_rated_by_the_rules(flagged: dict[str, object]) -> None:
    ratings = _ratings(flagged["warehouse"])  # type: ignore[arg-type]
    groups: dict[str, list[str]] = flagged["groups"]  # type: ignore[assignment]
    ids = {name: [str(i) for i in values] for name, values in groups.items()}
    rules_of = ratings["rule_ids"].map(list)
    for column, rule in (("isPep", "pep"), ("PreviouslyReported", "previously_reported")):
        assert (ratings.loc[ids[column], "risk_tier"] == "High").all()
        assert rules_of[ids[column]].map(lambda r, rule=rule: rule in r).all()
    assert (ratings.loc[ids["CTRMatch"], "risk_tier"] != "Low").all()
    assert rules_of[ids["CTRMatch"]].map(lambda r: "ctr_match" in r).all()
    raised = ratings[ratings["rating_basis"] == "rule"]
    assert len(raised) > 0 and (raised["tier_before_rules"] != raised["risk_tier"]).all()
    with duckdb.connect(str(flagged["warehouse"]), read_only=True) as connection:
        figures = dict(connection.execute("SELECT measure || ':' || item, customers FROM rating_governance").fetchall())
        stored = connection.execute("SELECT rule_id FROM policy_rules ORDER BY position").fetchall()
        version = connection.execute("SELECT DISTINCT policy_version FROM cluster_assignments").fetchall()
    assert figures["rule_raised:pep"] + figures["rule_raised:previously_reported"] > 0
    assert figures["rule_matched:pep"] == 45 and figures["rule_matched:previously_reported"] == 45
    assert "rule_matched:many_alerts" in figures  # the added rule ran, with no code change
    assert [r[0] for r in stored] == ["pep", "previously_reported", "ctr_match", "hnw_housewife", "many_alerts"]
    assert version == [(load_policy(flagged["rules"]).version,)]  # type: ignore[arg-type]
    html = (Path(flagged["directory"]) / "reports" / "latest.html").read_text()  # type: ignore[arg-type]
    assert "Policy and overrides" in html and "many_alerts" in html


def test_explain_and_the_api_name_the_rules(flagged: dict[str, object], capsys: pytest.CaptureFixture[str]) -> None:
    warehouse: Path = flagged["warehouse"]  # type: ignore[assignment]
    ratings = _ratings(warehouse)
    raised = ratings[ratings["rating_basis"] == "rule"]
    customer = str(raised.index[0])
    assert cli.main(["explain", str(customer), "--warehouse", str(warehouse)]) == 0
    text = capsys.readouterr().out
    first_rule = list(raised["rule_ids"].iloc[0])[0]
    assert f"{first_rule}: " in text and "[raised the rating]" in text and "policy rules raised it to" in text
    assert cli.main(["explain", str(customer), "--warehouse", str(warehouse), "--json"]) == 0
    explained = json.loads(capsys.readouterr().out)
    assert explained["risk_tier"] == raised["risk_tier"].iloc[0] and explained["rating_basis"] == "rule"
    assert explained["rule_ids"] == list(raised["rule_ids"].iloc[0])
    assert all(rule["rationale"] for rule in explained["rules"])

    flagged_ids = {str(i) for ids in flagged["groups"].values() for i in ids}  # type: ignore[attr-defined]
    records = [r for r in file_records(flagged["source"]) if str(r["CustomerID"]) in flagged_ids]  # type: ignore[arg-type]
    process, base = start_server(warehouse)
    try:
        request = urllib.request.Request(
            f"{base}/v1/score", data=json.dumps({"customers": records}).encode(), method="POST",
            headers={"Content-Type": "application/json", "X-API-Key": API_KEY},
        )  # fmt: skip
        results = json.loads(urllib.request.urlopen(request, timeout=30).read())["results"]
        model = json.loads(urllib.request.urlopen(urllib.request.Request(
            f"{base}/v1/model", headers={"X-API-Key": API_KEY}), timeout=30).read())  # fmt: skip
    finally:
        stop_server(process)
    assert len(results) == len(flagged_ids)
    for result in results:
        stored = ratings.loc[result["customer_id"]]
        assert (result["risk_tier"], result["rating_basis"], result["rule_ids"]) == (
            stored["risk_tier"], stored["rating_basis"], list(stored["rule_ids"]))
    assert [rule["id"] for rule in model["policy"]["rules"]][-1] == "many_alerts"
    assert model["score_boundaries"]["High"] is not None


def test_a_bad_rules_file_stops_the_run_at_start_and_changes_nothing(
    flagged: dict[str, object], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    warehouse = tmp_path / "warehouse.duckdb"
    shutil.copy(flagged["warehouse"], warehouse)  # type: ignore[arg-type]
    before = published_state(warehouse)
    bad = tmp_path / "bad_rules.toml"
    bad.write_text(DEFAULT_RULES.read_text() + EXTRA_RULE.replace("num_alerts >= 9", "alerts >= 9"))
    summary = run_pipeline(flagged["source"], warehouse,  # type: ignore[arg-type]
                           settings=SegmentationSettings(n_init=3, rules_file=str(bad)))  # fmt: skip
    assert not summary.success
    assert summary.error.startswith("bad_rules.toml: rule 'many_alerts': unknown column 'alerts'"), summary.error
    assert "\n" not in summary.error
    code = cli.main(["run", "--input", str(flagged["source"]), "--warehouse", str(warehouse), "--rules", str(bad)])
    err = capsys.readouterr().err
    assert code == 1 and "error: bad_rules.toml: rule 'many_alerts': unknown column 'alerts'" in err
    assert "Traceback" not in err
    assert published_state(warehouse) == before


def test_a_rating_below_a_rule_floor_fails_the_blocking_check(flagged: dict[str, object], tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    """A scorer that ignores the floors (injected) is caught by the check, and nothing is published."""
    warehouse = tmp_path / "warehouse.duckdb"
    shutil.copy(flagged["warehouse"], warehouse)  # type: ignore[arg-type]
    before = published_state(warehouse)
    monkeypatch.setattr(Policy, "floor_ranks", lambda self, matched: np.full(matched.shape[0], 2, dtype=np.intp))
    monkeypatch.setattr("segmentation_pipeline.stages.model.SegmentationModel.verify_sample", lambda self: None)
    summary = run_pipeline(flagged["source"], warehouse, settings=SegmentationSettings(n_init=3))  # type: ignore[arg-type]
    assert not summary.success
    assert "ratings_meet_policy_floors" in summary.error and "rated below its floor" in summary.error, summary.error
    assert published_state(warehouse) == before
    assert load_model(Warehouse(warehouse)).policy.ids[-1] == "many_alerts"  # the published model still serves
