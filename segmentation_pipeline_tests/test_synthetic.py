"""Tests of the synthetic export generator: shape, realism, planted groups, determinism and writers."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from python_calamine import CalamineWorkbook
from sklearn.cluster import KMeans
from sklearn.metrics import adjusted_rand_score
from sklearn.preprocessing import StandardScaler

from segmentation_pipeline import schema, synthetic
from segmentation_pipeline.synthetic import (
    MISSING_RATES,
    PROVINCE_CITIES,
    REFERENCE_DATE,
    SyntheticExport,
    generate_export,
    write_export,
    write_labels,
)


@pytest.fixture(scope="module")
def export() -> SyntheticExport:
    return generate_export(3000, seed=7)


@pytest.fixture(scope="module")
def frame(export: SyntheticExport) -> pd.DataFrame:
    return export.to_frame()


def _customers(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per customer (channel rows dropped), duplicate DateofBirth dropped for name-based access."""
    return frame.loc[:, ~frame.columns.duplicated()].drop_duplicates("CustomerID").reset_index(drop=True)


def test_header_2023_repeats_date_of_birth_after_gender(export: SyntheticExport) -> None:
    expected = list(schema.HEADER_2023)
    expected.insert(expected.index("Gender") + 1, "DateofBirth")
    assert export.header == expected
    assert export.header.count("DateofBirth") == 2
    first, second = (i for i, name in enumerate(export.header) if name == "DateofBirth")
    assert export.header[second - 1] == "Gender"
    assert export.rows[first].equals(export.rows[second])
    assert list(export.to_frame().columns) == expected


def test_header_2022() -> None:
    export = generate_export(200, seed=1, header="2022")
    assert export.header == list(schema.HEADER_2022)
    assert export.rows.shape[1] == len(schema.HEADER_2022)
    assert all(schema.canonical_name(name) is not None for name in export.header)


def test_determinism(tmp_path: Path) -> None:
    a = write_export(generate_export(500, seed=3), tmp_path / "a.csv").read_bytes()
    b = write_export(generate_export(500, seed=3), tmp_path / "b.csv").read_bytes()
    c = write_export(generate_export(500, seed=4), tmp_path / "c.csv").read_bytes()
    assert a == b
    assert a != c
    small = generate_export(100, seed=3)
    xlsx = [write_export(small, tmp_path / f"{name}.xlsx").read_bytes() for name in ("a", "b")]
    assert xlsx[0] == xlsx[1]  # fixed creation time: the bundled sample does not change on regeneration


def test_customers_and_labels(export: SyntheticExport, frame: pd.DataFrame) -> None:
    customers = _customers(frame)
    assert len(customers) == 3000
    ids = customers["CustomerID"]
    assert ids.between(1_000_000, 9_999_999).all()
    assert not ids.is_monotonic_increasing
    labels = export.labels
    assert list(labels.columns) == ["customer_id", "planted_group"]
    assert labels["customer_id"].map(type).eq(str).all()  # ids are text, as the pipeline reads them
    assert set(labels["customer_id"]) == set(ids.astype(str))
    shares = labels["planted_group"].value_counts(normalize=True)
    assert shares["low"] == pytest.approx(0.6, abs=0.04)
    assert shares["medium"] == pytest.approx(0.3, abs=0.04)
    assert shares["high"] == pytest.approx(0.1, abs=0.03)


def test_missing_rates(frame: pd.DataFrame) -> None:
    customers = _customers(frame)
    for column, rate in MISSING_RATES.items():
        observed = customers[column].isna().mean()
        assert 0.05 <= rate <= 0.30
        assert observed == pytest.approx(rate, abs=0.03), column
    for column in ("PlaceofBirth", "Industry", "IncorporatedSince", "AvgBalance", "fundRemitUsage"):
        assert customers[column].isna().all(), column
    assert customers["FinancingType"].isna().mean() > 0.85
    assert customers["FocusTypeID"].nunique() == 1


def test_realistic_values(frame: pd.DataFrame) -> None:
    customers = _customers(frame)
    exp = customers["ExpVolume"].dropna()
    assert exp.min() >= 30_000
    assert exp.max() > 1_000_000
    assert exp.mean() > 1.5 * exp.median()  # right-skewed
    assert customers["isPep"].mean() == pytest.approx(0.015, abs=0.008)
    assert customers["HighIncomeHW"].mean() < 0.03
    assert set(customers["Gender"]) == {"M", "F"}
    assert (customers["Nationality"] == "PK").mean() > 0.9
    assert (customers["NumAlerts"] == 0).mean() > 0.6
    for province, city in zip(customers["Province"], customers["City"], strict=True):
        assert city in PROVINCE_CITIES[province]
    ref = pd.Timestamp(REFERENCE_DATE)
    age = (ref - customers["DateofBirth"]).dt.days / 365.25
    assert age.between(18, 85.01).all()
    since = customers["CustomerSince"]
    assert (since <= ref).all()
    assert ((ref - since).dt.days / 365.25 <= 25.01).all()
    assert ((since - customers["DateofBirth"]).dt.days / 365.25 >= 17.99).all()
    assert "First  Pension Account" in set(customers["AccountType"])


def test_channel_rows(frame: pd.DataFrame) -> None:
    counts = frame["CustomerID"].value_counts()
    assert set(counts.unique()) <= {1, 2, 3}
    assert (counts > 1).mean() == pytest.approx(0.3, abs=0.04)
    other = [i for i, name in enumerate(frame.columns) if name != "SubscribedChannels"]
    for customer_id in counts[counts > 1].index[:50]:
        rows = frame[frame["CustomerID"] == customer_id]
        assert len(rows.iloc[:, other].astype(str).drop_duplicates()) == 1
        channels = rows["SubscribedChannels"]
        assert channels.is_unique
        assert set(channels) <= set(schema.CHANNELS)
    # Shuffled: a multi-row customer's rows are not always adjacent.
    positions = frame.groupby("CustomerID").indices
    assert any(np.ptp(pos) > len(pos) - 1 for pos in positions.values() if len(pos) > 1)
    single = generate_export(300, seed=7, channel_rows=False).to_frame()
    assert single["CustomerID"].is_unique


def test_kmeans_recovers_planted_groups(export: SyntheticExport, frame: pd.DataFrame) -> None:
    customers = _customers(frame)
    money = ["ExpVolume", "ActualVolume", "CashUsage"]
    other = ["NonFacetoFaceUsage", "onlineFTusage", "NumAlerts", "isPep", "HighIncomeHW", "CTRMatch",
             "PreviouslyReported"]  # fmt: skip
    features = pd.DataFrame(
        {c: np.log1p(customers[c].astype("float64")) for c in money}
        | {c: customers[c].astype("float64") for c in other}
    )
    features = features.fillna(features.median())
    clusters = KMeans(n_clusters=3, n_init=10, random_state=0).fit_predict(StandardScaler().fit_transform(features))
    planted = export.labels.set_index("customer_id").loc[customers["CustomerID"].astype(str), "planted_group"]
    assert adjusted_rand_score(planted, clusters) >= 0.9


def test_planted_groups_not_one_flag(export: SyntheticExport, frame: pd.DataFrame) -> None:
    customers = _customers(frame).astype({"CustomerID": str}).merge(export.labels, left_on="CustomerID",
                                                                     right_on="customer_id")  # fmt: skip
    by_group = customers.groupby("planted_group")
    # No flag alone identifies the high group; the high group is cash-heavy with actual >> expected.
    for flag in ("isPep", "CTRMatch", "PreviouslyReported", "HighIncomeHW"):
        assert by_group[flag].mean()["high"] < 0.9
    ratio = (customers["ActualVolume"] / customers["ExpVolume"]).groupby(customers["planted_group"]).median()
    assert ratio["high"] > 3 > ratio["low"]


def test_xlsx_round_trip(tmp_path: Path) -> None:
    export = generate_export(400, seed=5)
    path = write_export(export, tmp_path / "export.xlsx")
    workbook = CalamineWorkbook.from_path(str(path))
    assert workbook.sheet_names == ["Customers"]
    data = workbook.get_sheet_by_name("Customers").to_python()
    assert data[0] == export.header
    assert len(data) - 1 == len(export.rows)
    first = data[1]
    dob = first[export.header.index("DateofBirth")]
    assert isinstance(dob, dt.date)
    assert pd.Timestamp(dob) == export.rows.iloc[0, export.header.index("DateofBirth")]
    assert first[0] == export.rows.iloc[0, 0]
    # Blank cells stay blank (calamine reads them as "").
    place = export.header.index("PlaceofBirth")
    assert all(row[place] == "" for row in data[1:])


def test_csv_and_parquet(tmp_path: Path) -> None:
    export = generate_export(300, seed=2)
    csv = write_export(export, tmp_path / "export.csv")
    assert csv.read_text().splitlines()[0].split(",") == export.header
    back = pd.read_csv(csv)
    assert len(back) == len(export.rows)
    assert back["CustomerID"].tolist() == export.rows[0].tolist()

    parquet = pd.read_parquet(write_export(export, tmp_path / "export.parquet"))
    assert list(parquet.columns) == list(dict.fromkeys(export.header))
    assert len(parquet) == len(export.rows)

    labels = pd.read_csv(write_labels(export, tmp_path / "labels.csv"), dtype={"customer_id": str})
    pd.testing.assert_frame_equal(labels, export.labels, check_dtype=False)

    with pytest.raises(ValueError, match="unsupported"):
        write_export(export, tmp_path / "export.json")


def test_generated_in_parts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Past CHUNK_CUSTOMERS an export is generated (and written) part by part, each part seeded on its own: the
    file is reproducible, ids stay unique across parts, and the streamed file holds what generate_export gives."""
    monkeypatch.setattr(synthetic, "CHUNK_CUSTOMERS", 300)
    whole = generate_export(600, seed=3)
    assert whole.labels["customer_id"].is_unique and len(whole.labels) == 600
    assert whole.labels["customer_id"].str.len().eq(9).all()
    first, labels = synthetic.generate_file(600, tmp_path / "a.parquet", seed=3)
    again, _ = synthetic.generate_file(600, tmp_path / "b.parquet", seed=3)
    assert (first.customers, first.rows) == (600, len(whole.rows))
    assert first.path.read_bytes() == again.path.read_bytes()
    expected = pd.read_parquet(write_export(whole, tmp_path / "c.parquet"))
    pd.testing.assert_frame_equal(pd.read_parquet(first.path), expected)
    pd.testing.assert_frame_equal(pd.read_csv(labels, dtype={"customer_id": str}), whole.labels, check_dtype=False)
    csv, _ = synthetic.generate_file(600, tmp_path / "a.csv", seed=3)
    assert csv.path.read_bytes() == write_export(whole, tmp_path / "c.csv").read_bytes()
