"""Deterministic synthetic customer risk-summary exports, with planted behaviour groups.

The real export cannot leave the bank, so tests, benchmarks and the bundled sample use data generated here. The
generator mimics the quirks of real files that ingestion has to cope with (see ``shared/column-glossary.md``):

* the 2023 header repeats ``DateofBirth`` (a second, identical column right after ``Gender``);
* a customer subscribed to several delivery channels is exported once per channel;
* several numeric columns have blank cells, some columns are entirely blank;
* money columns are heavily right-skewed (log-normal).

Every customer belongs to one of three planted behaviour groups (``low``/``medium``/``high``, roughly 60/30/10 %)
which differ on the risk-relevant numeric and flag columns, so that a plain K-means pipeline can be checked to
recover them (the group of each customer is returned in ``SyntheticExport.labels``).

Output is a pure function of ``(n_customers, seed, header, channel_rows)``: ages are computed against the fixed
``REFERENCE_DATE``, never today's date.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

import numpy as np
import pandas as pd

from segmentation_pipeline import schema
from segmentation_pipeline.stages.fields import DAYS_PER_YEAR

REFERENCE_DATE: Final = dt.date(2026, 6, 30)
"""The "today" of every synthetic export (ages, relationship lengths); fixed so output is deterministic."""

GROUPS: Final[tuple[str, ...]] = ("low", "medium", "high")
GROUP_SHARES: Final[tuple[float, ...]] = (0.60, 0.30, 0.10)

OCCUPATIONS: Final[tuple[str, ...]] = (
    "Pension",
    "Private/NGO Employee",
    "Government/Semi Government Employee",
    "Self Employed in Agriculture",
    "Self-Employed in Enterprise/Proprietor/Partner/Director",
    "Casual worker",
    "Housewife",
    "Student",
)
# Occupation mix per group (same order as OCCUPATIONS). Deliberately overlapping: occupation should hint at the
# group, not give it away, so categorical columns do not dominate a clustering.
_OCCUPATION_P: Final[dict[str, tuple[float, ...]]] = {
    "low": (0.22, 0.30, 0.15, 0.08, 0.07, 0.08, 0.06, 0.04),
    "medium": (0.08, 0.18, 0.08, 0.16, 0.34, 0.06, 0.06, 0.04),
    "high": (0.06, 0.14, 0.06, 0.14, 0.44, 0.04, 0.10, 0.02),
}

ACCOUNT_TYPES: Final[tuple[str, ...]] = (
    "Aasan Account- Current",
    "First  Pension Account",  # two spaces, as in the real export
    "STAFF SALARY ACCOUNT",
    "Mashal Saving Account",
    "FIRST Current Account",
    "First Daily Profit Account",
    "Repa Account",
)
_ACCOUNT_P: Final[tuple[float, ...]] = (0.22, 0.10, 0.08, 0.14, 0.22, 0.16, 0.08)

PROVINCE_CITIES: Final[dict[str, tuple[str, ...]]] = {
    "Punjab": ("LAHORE", "FAISALABAD", "RAWALPINDI", "MULTAN", "GUJRANWALA", "SIALKOT"),
    "Sindh": ("KARACHI", "HYDERABAD", "SUKKUR", "LARKANA"),
    "KPK": ("PESHAWAR", "MARDAN", "ABBOTTABAD", "SWAT"),
    "Balochistan": ("QUETTA", "GWADAR"),
    "Gilgat/Baltistan": ("GILGIT", "SKARDU"),  # "Gilgat" is the export's spelling
    "Islamabad": ("ISLAMABAD",),
}
_PROVINCE_P: Final[tuple[float, ...]] = (0.50, 0.25, 0.11, 0.05, 0.03, 0.06)

FINANCING_TYPES: Final[tuple[str, ...]] = ("Auto Finance", "Home Finance", "Personal Finance", "Running Finance")
FOREIGN_COUNTRIES: Final[tuple[str, ...]] = ("AE", "SA", "GB", "US", "AF", "CN")

# Share of blank cells per numeric column (customer level; channel rows of a customer share them).
MISSING_RATES: Final[dict[str, float]] = {
    "ExpVolume": 0.06,
    "ActualVolume": 0.12,
    "CashUsage": 0.18,
    "NonFacetoFaceUsage": 0.24,
    "onlineFTusage": 0.28,
}

CHANNEL_ROW_SHARE: Final = 0.30
"""Share of customers exported as one row per subscribed channel (2-3 rows) when ``channel_rows`` is on."""

# 2023 header -> 2022 header, for the columns the 2022 export has.
_HEADER_2022_BY_2023: Final[dict[str, str]] = {
    "CustomerID": "CustomerID",
    "Occupation": "Source of Income",
    "DateofBirth": "DateofBirth",
    "Gender": "Gender",
    "isPep": "Is PEP",
    "HighIncomeHW": "High Net Worth House-wife",
    "ExpVolume": "Expected Transaction Volume",
    "AccountType": "Subscribed Account Type",
    "SubscribedChannels": "Subscribed Channels",
    "Province": "Province",
    "City": "City",
}

SHEET_MAX_ROWS = 1_048_576
"""Rows of one Excel sheet, header row included (Excel's maximum). An xlsx export with more rows continues on
further sheets, "Customers (2)", ... (a module constant so that tests can lower it)."""
SHEET_NAME: Final = "Customers"

CHUNK_CUSTOMERS = 1_000_000
"""Customers generated at a time: a larger export is generated (and written by :func:`generate_file`) in parts of
this many, each from its own seeded generator (a module constant so that tests can lower it)."""

_DATE_HEADERS: Final[frozenset[str]] = frozenset({"DateofBirth", "CustomerSince", "IncorporatedSince"})
_EXCEL_EPOCH: Final = np.datetime64("1899-12-30", "D")


@dataclass(frozen=True)
class _GroupProfile:
    """Behaviour of one planted group. Money medians are monthly PKR; ``*_p`` are Bernoulli probabilities."""

    exp_median: float
    exp_sigma: float
    ratio_low: float  # ActualVolume / ExpVolume is drawn log-uniformly in [ratio_low, ratio_high]
    ratio_high: float
    cash_beta: tuple[float, float]  # cash share of ActualVolume ~ Beta(a, b)
    non_f2f_mean: float
    online_ft_mean: float
    alerts_mean: float
    ctr_p: float
    reported_p: float
    pep_p: float
    hw_p: float


_PROFILES: Final[dict[str, _GroupProfile]] = {
    # Salaried / pension: small volumes close to what was declared, little cash, branch-based, no alerts.
    "low": _GroupProfile(60_000, 0.45, 0.5, 1.2, (2, 10), 2, 1, 0.02, 0.01, 0.003, 0.003, 0.004),
    # Self-employed / enterprise: ~10x the volume, moderate cash, more digital.
    "medium": _GroupProfile(600_000, 0.45, 0.7, 1.5, (5, 6), 14, 9, 0.25, 0.08, 0.02, 0.012, 0.015),
    # ~100x low, actual volume 3-10x the declared one, cash-heavy, alerts, CTR matches and previous reports.
    "high": _GroupProfile(6_000_000, 0.5, 3.0, 10.0, (9, 2), 22, 6, 3.0, 0.6, 0.4, 0.12, 0.08),
}


@dataclass(frozen=True)
class SyntheticExport:
    """A generated export: its header, its rows and the planted group of every customer.

    ``rows`` has positional integer column labels ``0..len(header)-1``, because the 2023 header is not unique
    (``DateofBirth`` appears twice) and a DataFrame keyed by it would make column access ambiguous. Dates are
    ``datetime64`` columns, blank cells are missing values (NaN/NaT/None/<NA>).
    """

    header: list[str]
    rows: pd.DataFrame
    labels: pd.DataFrame  # customer_id (text), planted_group ("low" / "medium" / "high"), one row per customer

    def to_frame(self) -> pd.DataFrame:
        """The rows with the export's header as column names (duplicate names kept, as in the file)."""
        frame = self.rows.copy()
        frame.columns = list(self.header)
        return frame


def generate_export(
    n_customers: int,
    seed: int = 0,
    *,
    header: Literal["2023", "2022"] = "2023",
    channel_rows: bool = True,
) -> SyntheticExport:
    """Generate a synthetic export of ``n_customers`` customers.

    Args:
        n_customers: number of distinct customers (the export has more rows when ``channel_rows`` is on).
        seed: random seed; the same arguments always give the same export.
        header: ``"2023"`` for the full export (``schema.HEADER_2023`` with ``DateofBirth`` repeated after
            ``Gender``), ``"2022"`` for the older export with spelled-out headers (``schema.HEADER_2022``).
        channel_rows: export ~30 % of customers once per subscribed channel (2-3 rows differing only in
            ``SubscribedChannels``); otherwise every customer has exactly one row.

    Returns:
        The export, with rows in a deterministic shuffled order and the planted group of every customer.
    """
    _check_arguments(n_customers, header)
    if n_customers <= CHUNK_CUSTOMERS:
        return _generate_part(n_customers, np.random.default_rng(seed), header, channel_rows)
    parts = list(iter_export(n_customers, seed, header=header, channel_rows=channel_rows))
    rows = pd.concat([part.rows for part in parts], ignore_index=True)
    labels = pd.concat([part.labels for part in parts], ignore_index=True)
    labels = labels.sort_values("customer_id", ignore_index=True)
    return SyntheticExport(header=parts[0].header, rows=rows, labels=labels)


def iter_export(
    n_customers: int,
    seed: int = 0,
    *,
    header: Literal["2023", "2022"] = "2023",
    channel_rows: bool = True,
) -> Iterator[SyntheticExport]:
    """The export of :func:`generate_export` in parts of at most :data:`CHUNK_CUSTOMERS` customers, so that
    ten million customers can be written with one part in memory at a time (:func:`generate_file`).

    Up to :data:`CHUNK_CUSTOMERS` customers there is one part, exactly :func:`generate_export`'s export. Above,
    part ``c`` is drawn from its own generator, seeded with ``(seed, c)``, so every part (and so the whole file)
    is a pure function of the arguments; customer ids are then 9-digit numbers (:func:`_chunk_ids`), unique
    across parts, and each part's rows are shuffled within the part (a customer's rows never span two parts).
    """
    _check_arguments(n_customers, header)
    if n_customers <= CHUNK_CUSTOMERS:
        yield _generate_part(n_customers, np.random.default_rng(seed), header, channel_rows)
        return
    if n_customers > _CHUNK_ID_SPAN:
        raise ValueError(f"n_customers must be at most {_CHUNK_ID_SPAN:,}, got {n_customers:,}")
    offset = int(np.random.default_rng([seed, _ID_STREAM]).integers(_CHUNK_ID_SPAN))
    for number, start in enumerate(range(0, n_customers, CHUNK_CUSTOMERS)):
        size = min(CHUNK_CUSTOMERS, n_customers - start)
        rng = np.random.default_rng([seed, number])
        ids = _chunk_ids(np.arange(start, start + size, dtype=np.int64), offset)
        yield _generate_part(size, rng, header, channel_rows, ids=rng.permutation(ids))


_CHUNK_ID_SPAN: Final = 900_000_000  # 9-digit ids, 100,000,000 .. 999,999,999
_CHUNK_ID_STEP: Final = 387_420_481  # coprime with the span: i -> (i * step + offset) mod span is a permutation
_ID_STREAM: Final = 2**32 - 1  # the id offset's own generator, distinct from every part's (seed, part number)


def _chunk_ids(positions: np.ndarray, offset: int) -> np.ndarray:
    """Distinct 9-digit ids of the customers at ``positions`` (0-based over the whole export) when generated in
    parts: an affine permutation of ``0 .. span-1``, so no two positions share an id, whatever part they are in."""
    return 100_000_000 + (positions * _CHUNK_ID_STEP + offset) % _CHUNK_ID_SPAN


def _check_arguments(n_customers: int, header: str) -> None:
    if n_customers < 1:
        raise ValueError(f"n_customers must be positive, got {n_customers}")
    if header not in ("2023", "2022"):
        raise ValueError(f"header must be '2023' or '2022', got {header!r}")


def _generate_part(
    n_customers: int,
    rng: np.random.Generator,
    header: Literal["2023", "2022"],
    channel_rows: bool,
    ids: np.ndarray | None = None,
) -> SyntheticExport:
    """``n_customers`` customers drawn from ``rng`` (``ids``: theirs, else drawn as 7-digit numbers)."""
    customers, groups = _customers(n_customers, rng, ids)
    rows = _expand_channels(customers, rng, channel_rows)

    if header == "2023":
        names = list(schema.HEADER_2023)
        names.insert(names.index("Gender") + 1, "DateofBirth")  # the real 2023 export repeats DateofBirth here
        columns = [rows[name] for name in names]
    else:
        names = list(schema.HEADER_2022)
        by_2022 = {v: k for k, v in _HEADER_2022_BY_2023.items()}
        columns = [rows[by_2022[name]] for name in names]
    frame = pd.concat(columns, axis=1, ignore_index=True)
    frame.columns = pd.RangeIndex(len(names))

    text_ids = customers["CustomerID"].astype(str).to_numpy(object)  # ids are text, as the pipeline reads them
    labels = pd.DataFrame({"customer_id": text_ids, "planted_group": groups})
    labels = labels.sort_values("customer_id", ignore_index=True)
    return SyntheticExport(header=names, rows=frame, labels=labels)


def _customers(n: int, rng: np.random.Generator, ids: np.ndarray | None = None) -> tuple[pd.DataFrame, np.ndarray]:
    """One row per customer with every 2023 column except ``SubscribedChannels``, plus each customer's group
    (``ids``: the customers' ids, else drawn)."""
    group_idx = rng.choice(len(GROUPS), size=n, p=GROUP_SHARES)
    groups = np.asarray(GROUPS, dtype=object)[group_idx]
    prof = {name: np.array([getattr(_PROFILES[g], name) for g in GROUPS])[group_idx] for name in _PROFILE_FIELDS}

    # Unique random 7-digit ids: real customer numbers are neither sequential nor ordered by anything useful.
    if ids is None:
        ids = rng.choice(np.arange(1_000_000, 10_000_000), size=n, replace=False).astype(np.int64)

    # --- behaviour (planted groups) -----------------------------------------------------------------------
    exp_volume = np.maximum(30_000, np.round(prof["exp_median"] * rng.lognormal(0.0, prof["exp_sigma"]), -3))
    ratio = np.exp(rng.uniform(np.log(prof["ratio_low"]), np.log(prof["ratio_high"])))
    actual_volume = np.round(exp_volume * ratio * rng.lognormal(0.0, 0.15, n), 2)
    cash_a, cash_b = (np.array([_PROFILES[g].cash_beta[i] for g in GROUPS])[group_idx] for i in (0, 1))
    cash_usage = np.round(actual_volume * rng.beta(cash_a, cash_b), 2)  # cash is a share of what moved
    non_f2f = rng.poisson(prof["non_f2f_mean"]).astype(np.int64)
    online_ft = rng.poisson(prof["online_ft_mean"]).astype(np.int64)
    alerts = rng.poisson(prof["alerts_mean"]).astype(np.int64)
    ctr = (rng.random(n) < prof["ctr_p"]).astype(np.int64)
    reported = (rng.random(n) < prof["reported_p"]).astype(np.int64)
    pep = (rng.random(n) < prof["pep_p"]).astype(np.int64)
    hw = (rng.random(n) < prof["hw_p"]).astype(np.int64)

    # --- demographics (weakly related to group) -----------------------------------------------------------
    occupation = np.empty(n, dtype=object)
    occupation_values = np.asarray(OCCUPATIONS, dtype=object)
    for gi, g in enumerate(GROUPS):
        members = group_idx == gi
        occupation[members] = rng.choice(occupation_values, size=members.sum(), p=_OCCUPATION_P[g])
    occupation[hw == 1] = "Housewife"  # the flag means a high-net-worth housewife
    gender = np.where(rng.random(n) < 0.68, "M", "F").astype(object)
    gender[occupation == "Housewife"] = "F"

    # Ages 18-85; pensioners are old. Dates are whole days before the fixed reference date.
    ref = np.datetime64(REFERENCE_DATE, "D")
    age_years = rng.uniform(18, 70, n)
    pension = occupation == "Pension"
    age_years[pension] = rng.uniform(58, 85, pension.sum())
    students = occupation == "Student"
    age_years[students] = rng.uniform(18, 26, students.sum())
    dob = ref - np.round(age_years * DAYS_PER_YEAR).astype("timedelta64[D]")
    # Relationship started 0-25 years ago, but not before the customer turned 18.
    years_adult = age_years - 18
    since_years = rng.uniform(0, 1, n) * np.minimum(25, years_adult)
    since = ref - np.round(since_years * DAYS_PER_YEAR).astype("timedelta64[D]")

    account = rng.choice(np.asarray(ACCOUNT_TYPES, dtype=object), size=n, p=_ACCOUNT_P)
    account[pension & (rng.random(n) < 0.6)] = "First  Pension Account"
    provinces = np.asarray(list(PROVINCE_CITIES), dtype=object)
    province = rng.choice(provinces, size=n, p=_PROVINCE_P)
    city = np.empty(n, dtype=object)
    for prov, cities in PROVINCE_CITIES.items():
        members = province == prov
        city[members] = rng.choice(np.asarray(cities, dtype=object), size=members.sum())
    nationality = np.where(rng.random(n) < 0.97, "PK", rng.choice(FOREIGN_COUNTRIES, n)).astype(object)
    residence_draw = rng.random(n)
    residence = np.where(residence_draw < 0.85, "PK", None).astype(object)
    foreign_res = residence_draw >= 0.97
    residence[foreign_res] = rng.choice(FOREIGN_COUNTRIES, foreign_res.sum())
    financing = np.where(rng.random(n) < 0.06, rng.choice(FINANCING_TYPES, n), None).astype(object)

    # --- bookkeeping ---------------------------------------------------------------------------------------
    segment = np.where(rng.random(n) < 0.9, 1.0, np.nan)
    model_id = rng.choice([11, 12], size=n, p=[0.7, 0.3]).astype(np.int64)
    assessment = rng.choice([1, 2], size=n, p=[0.8, 0.2]).astype(np.int64)
    prev_assessment = pd.array(rng.integers(100_000, 999_999, n), dtype="Int64")
    prev_assessment[rng.random(n) < 0.2] = pd.NA  # new customers have no previous assessment
    account_category = rng.choice([1, 2, 3, 4], size=n, p=[0.55, 0.25, 0.15, 0.05]).astype(np.int64)

    blank_text = pd.Series([None] * n, dtype="str")
    blank_float = np.full(n, np.nan)
    customers = pd.DataFrame(
        {
            "CustomerID": ids,
            "SegmentID": segment,
            "FocusTypeID": np.full(n, 3, dtype=np.int64),
            "Occupation": occupation,
            "DateofBirth": dob.astype("datetime64[s]"),
            "Gender": gender,
            "isPep": pep,
            "HighIncomeHW": hw,
            "ExpVolume": _with_blanks(exp_volume.astype(np.int64), "ExpVolume", rng),
            "AccountType": account,
            "FinancingType": financing,
            "Nationality": nationality,
            "PlaceofBirth": blank_text,
            "Residence": residence,
            "Province": province,
            "City": city,
            "CustomerSince": since.astype("datetime64[s]"),
            "Industry": blank_text,
            "IncorporatedSince": np.full(n, np.datetime64("NaT"), dtype="datetime64[s]"),
            "ActualVolume": _with_blanks(actual_volume, "ActualVolume", rng),
            "AvgBalance": blank_float,
            "NumAlerts": alerts,
            "NonFacetoFaceUsage": _with_blanks(non_f2f, "NonFacetoFaceUsage", rng),
            "fundRemitUsage": blank_float,
            "onlineFTusage": _with_blanks(online_ft, "onlineFTusage", rng),
            "CashUsage": _with_blanks(cash_usage, "CashUsage", rng),
            "CTRMatch": ctr,
            "PreviouslyReported": reported,
            "ModelID": model_id,
            "AssessmentType": assessment,
            "PrevAssessmentID": prev_assessment,
            "AccountCategory": account_category,
        }
    )
    return customers, groups


_PROFILE_FIELDS: Final[tuple[str, ...]] = (
    "exp_median", "exp_sigma", "ratio_low", "ratio_high", "non_f2f_mean", "online_ft_mean", "alerts_mean",
    "ctr_p", "reported_p", "pep_p", "hw_p",
)  # fmt: skip


def _with_blanks(values: np.ndarray, column: str, rng: np.random.Generator) -> pd.Series:
    """``values`` with a ``MISSING_RATES[column]`` share blanked; integers become nullable ``Int64``."""
    mask = rng.random(len(values)) < MISSING_RATES[column]
    # Nullable Int64 keeps integer columns integer when blanks appear (a CSV shows "60000", not "60000.0").
    series = pd.Series(values, dtype="Int64" if values.dtype.kind == "i" else "float64")
    series[mask] = pd.NA if values.dtype.kind == "i" else np.nan
    return series


def _expand_channels(customers: pd.DataFrame, rng: np.random.Generator, channel_rows: bool) -> pd.DataFrame:
    """Add ``SubscribedChannels``, repeating multi-channel customers once per channel, and shuffle the rows."""
    n = len(customers)
    channels = np.asarray(schema.CHANNELS, dtype=object)
    single = rng.choice(channels, size=n).astype(object)
    single[rng.random(n) < 0.15] = None  # no channel subscribed
    if channel_rows:
        multi = rng.random(n) < CHANNEL_ROW_SHARE
        n_rows = np.where(multi, rng.choice([2, 3], size=n, p=[0.6, 0.4]), 1)
    else:
        multi = np.zeros(n, dtype=bool)
        n_rows = np.ones(n, dtype=np.int64)

    row_of = np.repeat(np.arange(n), n_rows)
    channel = single[row_of]
    # For multi-channel customers pick distinct channels: a random permutation, first k entries.
    for i in np.flatnonzero(multi):
        start = int(np.searchsorted(row_of, i))
        channel[start : start + n_rows[i]] = rng.permutation(channels)[: n_rows[i]]

    rows = customers.iloc[row_of].reset_index(drop=True)
    rows.insert(rows.columns.get_loc("FinancingType") + 1, "SubscribedChannels", channel)
    # Shuffle so a customer's channel rows are not necessarily adjacent, as in real exports.
    return rows.iloc[rng.permutation(len(rows))].reset_index(drop=True)


@dataclass(frozen=True)
class WrittenExport:
    """What :func:`save_export` wrote: counted from the rows written, not from what was asked for."""

    path: Path
    customers: int  # distinct customer ids written
    rows: int  # data rows written (header rows not counted)
    sheets: tuple[tuple[str, int], ...] = ()  # xlsx: (sheet name, data rows) per sheet, in order; else empty

    def describe(self) -> str:
        """One line: customers, rows and (xlsx) sheets written, e.g. for the ``generate`` command."""
        text = f"wrote {self.customers} customers in {self.rows} rows to {self.path}"
        if not self.sheets:
            return text
        each = ", ".join(f"{name!r} {rows} rows" for name, rows in self.sheets)
        if len(self.sheets) == 1:
            return f"{text} on 1 sheet: {each} (plus the header row)"
        return f"{text} on {len(self.sheets)} sheets: {each} (plus a header row each)"


def write_export(export: SyntheticExport, path: str | Path) -> Path:
    """Write ``export`` to ``path`` (see :func:`save_export`) and return the path written."""
    return save_export(export, path).path


def save_export(export: SyntheticExport, path: str | Path) -> WrittenExport:
    """Write ``export`` to ``path``; the format follows the suffix (``.xlsx``, ``.csv`` or ``.parquet``).

    * ``.xlsx``: sheet "Customers", streamed row by row with xlsxwriter's constant-memory mode (fast and
      flat in memory; pandas ``to_excel`` with that mode silently drops cells, so it is not used). Dates are
      real Excel dates, blanks are empty cells. An export longer than a sheet (:data:`SHEET_MAX_ROWS` rows with
      the header) continues on "Customers (2)", "Customers (3)", ..., each with the header row; all the rows of
      one customer (one per subscribed channel) are on the same sheet (see :func:`sheet_rows`).
    * ``.csv``: the header as-is, duplicate ``DateofBirth`` included; dates as ``YYYY-MM-DD``.
    * ``.parquet``: Parquet cannot hold duplicate column names, so the second ``DateofBirth`` copy is dropped.

    Returns:
        The path, and the customers, rows and sheets written.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    path.parent.mkdir(parents=True, exist_ok=True)
    ids = export.rows[export.header.index("CustomerID")].to_numpy()
    if suffix == ".xlsx":
        sheets = _write_xlsx(export, path)
        customers = sum(len(pd.unique(ids[rows])) for _, rows in sheets)  # no customer is on two sheets
        return WrittenExport(path, customers, sum(len(rows) for _, rows in sheets),
                             tuple((name, len(rows)) for name, rows in sheets))  # fmt: skip
    if suffix == ".csv":
        export.to_frame().to_csv(path, index=False, date_format="%Y-%m-%d", lineterminator="\n")
    elif suffix == ".parquet":
        _parquet_frame(export).to_parquet(path, index=False, engine="pyarrow")
    else:
        raise ValueError(f"unsupported export format {suffix!r} (use .xlsx, .csv or .parquet)")
    return WrittenExport(path, len(pd.unique(ids)), len(export.rows))


def _parquet_frame(export: SyntheticExport) -> pd.DataFrame:
    """The rows named by the header, the repeated ``DateofBirth`` dropped (Parquet names are unique)."""
    keep = [i for i, name in enumerate(export.header) if name not in export.header[:i]]
    frame = export.rows[keep]
    frame.columns = [export.header[i] for i in keep]
    return frame


def generate_file(
    n_customers: int,
    path: str | Path,
    seed: int = 0,
    *,
    header: Literal["2023", "2022"] = "2023",
    channel_rows: bool = True,
) -> tuple[WrittenExport, Path]:
    """Generate an export straight into ``path`` (as :func:`save_export` writes it) and its planted groups into
    ``<stem>.labels.csv`` beside it (as :func:`write_labels`, sorted by id); returns what was written and the
    labels' path. More than :data:`CHUNK_CUSTOMERS` customers to a ``.parquet`` or ``.csv`` file are generated and
    written one :func:`iter_export` part at a time (one row group each), so memory stays that of one part; an
    ``.xlsx`` file (at most a few million rows) is generated whole."""
    path = Path(path)
    labels_path = path.with_name(path.stem + ".labels.csv")
    suffix = path.suffix.lower()
    if n_customers <= CHUNK_CUSTOMERS or suffix not in (".parquet", ".csv"):
        export = generate_export(n_customers, seed, header=header, channel_rows=channel_rows)
        written = save_export(export, path)
        write_labels(export, labels_path)
        return written, labels_path
    import pyarrow as pa
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    customers = rows = 0
    ids: list[np.ndarray] = []
    groups: list[np.ndarray] = []
    writer: pq.ParquetWriter | None = None
    try:
        for number, part in enumerate(iter_export(n_customers, seed, header=header, channel_rows=channel_rows)):
            if suffix == ".parquet":
                table = pa.Table.from_pandas(_parquet_frame(part), preserve_index=False)
                writer = writer or pq.ParquetWriter(path, table.schema)
                writer.write_table(table.cast(writer.schema))
                del table
            else:
                part.to_frame().to_csv(path, mode="a" if number else "w", header=not number, index=False,
                                       date_format="%Y-%m-%d", lineterminator="\n")  # fmt: skip
            part_ids = part.rows[part.header.index("CustomerID")].to_numpy()
            customers += len(pd.unique(part_ids))  # a customer's rows are all in one part
            rows += len(part.rows)
            ids.append(part.labels["customer_id"].to_numpy().astype(np.int64))
            groups.append(pd.Categorical(part.labels["planted_group"], categories=GROUPS).codes)
            del part
    finally:
        if writer is not None:
            writer.close()
    all_ids, all_groups = np.concatenate(ids), np.concatenate(groups)
    order = np.argsort(all_ids, kind="stable")  # every id has 9 digits: numeric order is text order
    names = np.asarray(GROUPS, dtype=object)
    for start in range(0, len(order), CHUNK_CUSTOMERS):
        block = order[start : start + CHUNK_CUSTOMERS]
        pd.DataFrame({"customer_id": all_ids[block].astype(str), "planted_group": names[all_groups[block]]}).to_csv(
            labels_path, mode="a" if start else "w", header=not start, index=False, lineterminator="\n"
        )
    return WrittenExport(path, customers, rows), labels_path


def sheet_rows(export: SyntheticExport) -> list[np.ndarray]:
    """The row positions each xlsx sheet holds, in order: all rows when they fit on one sheet
    (:data:`SHEET_MAX_ROWS` rows with the header), else as many whole customers per sheet as fit, taken in the
    order they first appear, never one customer's channel rows on two sheets. Rows keep their order on each sheet.
    """
    capacity = SHEET_MAX_ROWS - 1  # the header row takes one
    n = len(export.rows)
    if n <= capacity:
        return [np.arange(n)]
    codes, _ = pd.factorize(export.rows[export.header.index("CustomerID")].to_numpy())  # first-appearance order
    sizes = np.bincount(codes)
    if sizes.max() > capacity:
        raise ValueError(f"a customer has {sizes.max()} rows, more than a sheet of {SHEET_MAX_ROWS} rows holds")
    ends = np.cumsum(sizes)  # rows up to and including each customer
    sheet_of_customer = np.empty(len(sizes), dtype=np.int64)
    start, taken, sheet = 0, 0, 0
    while start < len(sizes):
        stop = int(np.searchsorted(ends, taken + capacity, side="right"))  # customers start..stop-1 fit
        sheet_of_customer[start:stop] = sheet
        taken, start, sheet = int(ends[stop - 1]), stop, sheet + 1
    sheet_of_row = sheet_of_customer[codes]
    order = np.argsort(sheet_of_row, kind="stable")
    bounds = np.searchsorted(sheet_of_row[order], np.arange(1, sheet))
    return np.split(order, bounds)


def write_labels(export: SyntheticExport, path: str | Path) -> Path:
    """Write the planted groups (``customer_id,planted_group``, one line per customer) as CSV; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    export.labels.to_csv(path, index=False, lineterminator="\n")
    return path


def _write_xlsx(export: SyntheticExport, path: Path) -> list[tuple[str, np.ndarray]]:
    """Stream the export into an xlsx workbook with xlsxwriter in constant-memory mode, one sheet per
    :func:`sheet_rows` part; returns (sheet name, row positions) per sheet written."""
    import xlsxwriter  # local import: only the xlsx writer needs it

    # Column-wise conversion to plain Python objects (None for blanks) up front; the per-row loop then only zips
    # lists, so the time goes to xlsxwriter itself.
    columns: list[list[object]] = []
    for i, name in enumerate(export.header):
        col = export.rows[i]
        if name in _DATE_HEADERS:
            # Excel serial day numbers; the column's date format (set below) is applied to unformatted cells.
            days = (col.to_numpy("datetime64[D]") - _EXCEL_EPOCH).astype("timedelta64[D]").astype(np.float64)
            days[col.isna().to_numpy()] = np.nan
            values = days.tolist()
        else:
            values = col.astype(object).tolist()
        columns.append([None if v is None or v is pd.NA or v != v else v for v in values])  # v != v: NaN

    parts = sheet_rows(export)
    written: list[tuple[str, np.ndarray]] = []
    # Cell values are data, never formulas or links: turning the string checks off is both faster and safer.
    options = {"constant_memory": True, "strings_to_formulas": False, "strings_to_urls": False}
    workbook = xlsxwriter.Workbook(str(path), options)
    try:
        # A fixed creation time keeps the file byte-identical across runs (xlsxwriter stamps "now" otherwise).
        workbook.set_properties({"created": dt.datetime.combine(REFERENCE_DATE, dt.time())})
        date_format = workbook.add_format({"num_format": "yyyy-mm-dd"})
        for number, rows in enumerate(parts, start=1):
            name = SHEET_NAME if number == 1 else f"{SHEET_NAME} ({number})"
            sheet = workbook.add_worksheet(name)
            for i, header in enumerate(export.header):
                if header in _DATE_HEADERS:
                    sheet.set_column(i, i, 11, date_format)
            sheet.write_row(0, 0, export.header)
            # This sheet's rows, in their order (all of them when the export fits on one sheet).
            part = columns if len(parts) == 1 else [[column[i] for i in rows.tolist()] for column in columns]
            for r, row in enumerate(zip(*part, strict=True), start=1):
                sheet.write_row(r, 0, row)
            written.append((name, rows))
            del part
    finally:
        workbook.close()
    return written
