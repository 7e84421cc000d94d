"""The fitted segmentation model: fit once (:func:`fit_model`), store as plain arrays and JSON, compile once
(:meth:`SegmentationModel.compile`), score everywhere.

:func:`fit_model` is the only place a model is trained: the ``kmeans_model`` asset, the CLI run, the benchmarks
and the tests all call it. The model holds no scikit-learn estimator other than the feature transformer, whose
fitted state is itself plain arrays, so it is stored without pickle (:meth:`SegmentationModel.to_bytes`: a zip of
``model.json`` and ``arrays.npz`` read with ``allow_pickle=False``).

A stored model carries its *feature contract* (what the code that fitted it computes, in order) and a small
*verification sample* (customers and the clusters, distances and scores the fit gave them). Loading checks both
against the running code: a model the running code would score differently is refused, never served.
"""

from __future__ import annotations

import hashlib
import io
import json
import threading
import zipfile
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import date, datetime
from functools import cached_property
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from segmentation_pipeline import __version__
from segmentation_pipeline.config import PipelineSettings
from segmentation_pipeline.stages.clustering import fit_kmeans, reorder_clusters
from segmentation_pipeline.stages.customers import CustomerBatch, as_batch
from segmentation_pipeline.stages.embedding import fit_pca
from segmentation_pipeline.stages.features import CustomerFeatureTransformer
from segmentation_pipeline.stages.policy import Policy, PolicyError, load_policy, rate
from segmentation_pipeline.stages.quality import BEHAVIOUR_COLUMNS, DataQuality, check_before_fit, check_clusters
from segmentation_pipeline.stages.sampling import STRATA_COLUMNS, stratified_sample
from segmentation_pipeline.stages.stability import match_previous
from segmentation_pipeline.stages.tiering import INDICATORS, TIERS, RiskTierModel, fit_risk_tiers, indicator_matrix

if TYPE_CHECKING:
    from segmentation_pipeline.stages.compiled import CompiledScorer

FORMAT = "segmentation-model/2"  # 2: customer-level ratings (score boundaries) and the policy rules in force
SAMPLE_SIZE = 256  # customers kept with a model to verify, at load, that the running code scores them the same
SAMPLE_TOLERANCE = 1e-6  # distances and scores may differ by float rounding only
LOADED_KEPT = 2  # models kept loaded and verified per process (a run's steps load the same model several times)


class ModelContractError(ValueError):
    """A stored model the running code cannot score as it was fitted (different features, changed rules)."""


# SegmentationModel.from_bytes: the models last loaded in this process, checked
_LOADED: OrderedDict[tuple[bytes, type, tuple[int, ...]], SegmentationModel] = OrderedDict()
_LOADED_LOCK = threading.Lock()


@dataclass(frozen=True)  # shared once loaded (SegmentationModel.from_bytes): nobody changes it
class SegmentationModel:
    version: str
    features: CustomerFeatureTransformer
    pca_components: np.ndarray  # (components, features)
    pca_mean: np.ndarray  # (features,)
    explained_variance_ratio: np.ndarray  # (components,)
    centers: np.ndarray  # (k, components)
    tiers: RiskTierModel
    policy: Policy
    reference_date: date
    metrics: dict[str, float]
    k_search: pd.DataFrame
    trained_at: datetime
    n_customers: int
    settings: dict[str, object] = field(default_factory=dict)
    input_sha256: str | None = None
    run_id: str | None = None
    contract: dict[str, object] = field(default_factory=dict)
    code_version: str = __version__
    sample: dict[str, Any] = field(default_factory=dict)  # columns + expected cluster / distance / score

    @property
    def k(self) -> int:
        return int(self.centers.shape[0])

    @cached_property
    def scorer(self) -> CompiledScorer:
        """The compiled scorer (built once per model)."""
        from segmentation_pipeline.stages.compiled import CompiledScorer

        return CompiledScorer(self)

    def profiles(self) -> pd.DataFrame:
        """Per cluster: tier, score, the score boundary of its tier (a customer of any segment scoring at or above it
        is rated at least that tier), the score's terms and the typical values (``segment_profiles``)."""
        tiers = self.tiers
        out = pd.DataFrame({"cluster": np.arange(self.k), "risk_tier": tiers.cluster_tiers,
                            "risk_score": tiers.cluster_scores,
                            "tier_score_boundary": [tiers.boundary_of(t) for t in tiers.cluster_tiers]})  # fmt: skip
        out.loc[np.isinf(out["tier_score_boundary"]), "tier_score_boundary"] = np.nan  # Low: any score
        terms = pd.DataFrame(tiers.contributions, columns=[f"contribution_{n}" for n in INDICATORS])
        typical = pd.DataFrame(tiers.typical, columns=[f"median_{n}" for n in INDICATORS])
        return pd.concat([out, terms, typical], axis=1)

    # -- storage --
    def to_bytes(self) -> bytes:
        features_meta, feature_arrays = self.features.to_state()
        tiers_meta, tier_arrays = self.tiers.to_state()
        meta = {
            "format": FORMAT,
            "version": self.version,
            "reference_date": self.reference_date.isoformat(),
            "metrics": self.metrics,
            "k_search": self.k_search.to_dict("records"),
            "trained_at": self.trained_at.isoformat(),
            "n_customers": self.n_customers,
            "settings": self.settings,
            "input_sha256": self.input_sha256,
            "run_id": self.run_id,
            "contract": self.contract,
            "code_version": self.code_version,
            "sample": self.sample,
            "features": features_meta,
            "tiers": tiers_meta,
            "policy": self.policy.to_dict(),
        }
        arrays = {
            "pca_components": self.pca_components, "pca_mean": self.pca_mean,
            "explained_variance_ratio": self.explained_variance_ratio, "centers": self.centers,
            **{f"features.{k}": v for k, v in feature_arrays.items()},
            **{f"tiers.{k}": v for k, v in tier_arrays.items()},
        }  # fmt: skip
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
            archive.writestr("model.json", json.dumps(meta, default=_json_default, allow_nan=True))
            with archive.open("arrays.npz", "w", force_zip64=True) as sink:
                np.savez(sink, **arrays)
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, blob: bytes, *, transformer_class: type[CustomerFeatureTransformer] | None = None
                   ) -> SegmentationModel:  # fmt: skip
        """A stored model, checked against the running code (:meth:`check_contract`, :meth:`verify_sample`).
        Raises :class:`ModelContractError` with one line saying what differs.

        The same bytes give the same model: the last :data:`LOADED_KEPT` models loaded in this process are kept,
        keyed by their bytes' SHA-256, already checked and with their scorer built (a run's scoring step, its
        policy check and its report load one model; each load would rebuild the imputer's trees and re-score the
        sample). The model is shared: callers read it, none changes it."""
        running = transformer_class or CustomerFeatureTransformer  # the running code's rules are part of the key
        key = (hashlib.sha256(blob).digest(), running, tuple(map(id, running.derived_features.values())))
        with _LOADED_LOCK:
            model = _LOADED.get(key)
            if model is not None:
                _LOADED.move_to_end(key)
                return model
        model = cls._load(blob, transformer_class=transformer_class)
        with _LOADED_LOCK:
            _LOADED[key] = model
            while len(_LOADED) > LOADED_KEPT:
                _LOADED.popitem(last=False)
        return model

    @classmethod
    def _load(cls, blob: bytes, *, transformer_class: type[CustomerFeatureTransformer] | None) -> SegmentationModel:
        try:
            with zipfile.ZipFile(io.BytesIO(blob)) as archive:
                meta = json.loads(archive.read("model.json"))
                stored = io.BytesIO(archive.read("arrays.npz"))
            with np.load(stored, allow_pickle=False) as npz:  # allow_pickle=False: reading runs no code
                arrays = {name: npz[name] for name in npz.files}
        except (zipfile.BadZipFile, KeyError, ValueError, OSError) as error:
            raise ModelContractError(f"not a stored segmentation model ({type(error).__name__})") from None
        if meta.get("format") != FORMAT:
            raise ModelContractError(f"model format {meta.get('format')!r} is not {FORMAT!r}: refit the model")
        transformer_class = transformer_class or CustomerFeatureTransformer
        try:
            policy = Policy.from_dict(meta["policy"])
        except PolicyError as error:
            raise ModelContractError(f"model {meta.get('version')}: its stored policy rules are not valid for this "
                                     f"code ({error}): refit it with this code (segmentation run)") from None
        part = {prefix: {k.split(".", 1)[1]: v for k, v in arrays.items() if k.startswith(prefix + ".")}
                for prefix in ("features", "tiers")}  # fmt: skip
        model = cls(
            version=meta["version"],
            features=transformer_class.from_state(meta["features"], part["features"]),
            pca_components=arrays["pca_components"], pca_mean=arrays["pca_mean"],
            explained_variance_ratio=arrays["explained_variance_ratio"], centers=arrays["centers"],
            tiers=RiskTierModel.from_state(meta["tiers"], part["tiers"]), policy=policy,
            reference_date=date.fromisoformat(meta["reference_date"]),
            metrics=meta["metrics"], k_search=pd.DataFrame(meta["k_search"]),
            trained_at=datetime.fromisoformat(meta["trained_at"]), n_customers=int(meta["n_customers"]),
            settings=meta["settings"], input_sha256=meta["input_sha256"], run_id=meta["run_id"],
            contract=meta["contract"], code_version=meta["code_version"], sample=meta["sample"],
        )  # fmt: skip
        model.check_contract(transformer_class)
        model.verify_sample()
        return model

    def check_contract(self, transformer_class: type[CustomerFeatureTransformer] | None = None) -> None:
        """Refuse a model fitted under another feature contract than the running code's."""
        running = (transformer_class or CustomerFeatureTransformer).contract()
        stored = self.contract
        if stored != running:
            differing = sorted(key for key in set(stored) | set(running) if stored.get(key) != running.get(key))
            detail = "; ".join(f"{key}: model {stored.get(key)!r}, code {running.get(key)!r}" for key in differing[:2])
            raise ModelContractError(
                f"model {self.version} was fitted with another feature contract than this code computes "
                f"({detail}): refit it with this code (segmentation run)"
            )
        unknown = [n for n in self.features.numeric_columns_ if n not in running["numeric_candidates"]]  # type: ignore[operator]
        if unknown:
            raise ModelContractError(f"model {self.version} uses features this code does not compute: {unknown}")

    def verify_sample(self) -> None:
        """Score the stored sample with the compiled scorer; refuse the model if any cluster differs or a distance
        or score moved by more than float rounding."""
        sample = self.sample
        if not sample:
            return
        scored = self.scorer.score(CustomerBatch.from_columns(sample["customers"]))
        expected_clusters = np.asarray(sample["cluster"])
        if not np.array_equal(scored.cluster, expected_clusters):
            moved = int((scored.cluster != expected_clusters).sum())
            raise ModelContractError(
                f"model {self.version}: this code puts {moved} of its {len(expected_clusters)} stored sample customers "
                "in another cluster than the fit did: refit it with this code (segmentation run)"
            )
        expected_tiers = np.asarray(sample["risk_tier"], dtype=object)
        if not np.array_equal(scored.risk_tier, expected_tiers):
            moved = int((scored.risk_tier != expected_tiers).sum())
            raise ModelContractError(
                f"model {self.version}: this code rates {moved} of its {len(expected_tiers)} stored sample customers "
                "differently than the fit did: refit it with this code (segmentation run)"
            )
        for name in ("distance_to_centroid", "risk_score"):
            expected = np.asarray(sample[name], dtype=np.float64)
            actual = getattr(scored, name)
            if not np.allclose(actual, expected, rtol=SAMPLE_TOLERANCE, atol=SAMPLE_TOLERANCE):
                worst = float(np.max(np.abs(actual - expected)))
                raise ModelContractError(
                    f"model {self.version}: this code scores its stored sample differently than the fit did "
                    f"({name} off by up to {worst:.3g}): refit it with this code (segmentation run)"
                )


def _json_default(value: object) -> object:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, datetime | date):
        return value.isoformat()
    raise TypeError(f"not JSON: {type(value).__name__}")


@dataclass
class FittedModel:
    """What one fit produced: the model, the clusters it gave the training customers (renumbered to keep the
    previous published ids), and how they relate to the previous assignments."""

    model: SegmentationModel
    labels: np.ndarray
    order: list[int]
    previous_labels: np.ndarray
    new_labels: np.ndarray
    previous_model_version: str | None = None
    rows: np.ndarray | None = None  # the customers fitted on (positions), when a sample; ``labels`` are theirs


FIT_PLAN_COLUMNS: tuple[str, ...] = tuple(dict.fromkeys((*BEHAVIOUR_COLUMNS, *STRATA_COLUMNS)))


@dataclass(frozen=True)
class FitPlan:
    """What a fit needs to know of every customer before it starts: the data-quality gate's measures and which
    customers it is fitted on. :func:`plan_fit` only reads the columns in ``FIT_PLAN_COLUMNS``."""

    quality: DataQuality
    customers: int  # everyone
    rows: np.ndarray | None  # the sample fitted on (sorted positions among everyone); None: everyone


def plan_fit(everyone: CustomerBatch, settings: PipelineSettings) -> FitPlan:
    """The data-quality gate over every customer (:class:`~segmentation_pipeline.stages.quality.DataQualityError`
    when it fails), then, when there are more than ``settings.fit_sample_size``, the seeded stratified sample of
    them the model is fitted on (``stages/sampling.py``)."""
    quality = check_before_fit(everyone, max_imputed_share=settings.max_imputed_share,
                               min_complete_share=settings.min_complete_share)  # fmt: skip
    rows = None
    if settings.fit_sample_size is not None and everyone.n > settings.fit_sample_size:
        rows = stratified_sample(everyone, settings.fit_sample_size, seed=settings.random_state)
    return FitPlan(quality=quality, customers=everyone.n, rows=rows)


def fit_model(
    customers: CustomerBatch | pd.DataFrame,
    settings: PipelineSettings,
    previous: pd.DataFrame | None = None,
    *,
    reference_date: date,
    version: str,
    input_sha256: str | None = None,
    run_id: str | None = None,
    transformer_class: type[CustomerFeatureTransformer] = CustomerFeatureTransformer,
    policy: Policy | None = None,
    plan: FitPlan | None = None,
) -> FittedModel:
    """Fit features, PCA, K-means and tiers on cleaned customers. ``previous``: the last published assignments
    (customer_id, cluster, model_version), whose cluster ids the new clusters keep (customer overlap, Hungarian
    method); without them clusters are numbered by risk score, 0 the riskiest. ``policy``: the rules the model
    applies (default: ``settings.rules_file``, else the bundled rules); they are stored with it. More customers
    than ``settings.fit_sample_size``: the model is fitted on a seeded stratified sample of them
    (``stages/sampling.py``; ``FittedModel.rows``), after the data-quality gate has measured them all
    (:func:`plan_fit`). ``plan``: that plan, made beforehand on everyone's ``FIT_PLAN_COLUMNS``; ``customers`` are
    then only the customers it fits on (everyone's rows ``plan.rows``, in that order)."""
    policy = policy if policy is not None else load_policy(settings.rules_file)
    if plan is None:
        everyone = as_batch(customers)
        plan = plan_fit(everyone, settings)
        batch = everyone if plan.rows is None else everyone.take(plan.rows)
    else:
        batch = as_batch(customers)
        expected = plan.customers if plan.rows is None else len(plan.rows)
        if batch.n != expected:
            raise ValueError(f"the plan fits on {expected} customers, {batch.n} were given")
    quality, training_rows = plan.quality, plan.rows
    transformer = transformer_class(
        knn_neighbors=settings.knn_neighbors, knn_max_donors=settings.knn_max_donors,
        rare_level_share=settings.rare_level_share,
        random_state=settings.random_state,
    ).fit(batch)  # fmt: skip
    derived = transformer.derived(batch)
    embedding = fit_pca(transformer.transform(batch, derived), settings.pca_variance, settings.random_state)
    clustering = fit_kmeans(
        embedding.components, n_clusters=settings.n_clusters, k_range=(settings.k_min, settings.k_max),
        random_state=settings.random_state, n_init=settings.n_init,
        silhouette_sample_size=settings.silhouette_sample_size,
    )  # fmt: skip
    smallest = check_clusters(clustering.labels, clustering.k, min_cluster_size=settings.min_cluster_size)
    indicators = indicator_matrix(batch, derived)
    provisional = fit_risk_tiers(indicators, clustering.labels, clustering.k, settings.risk_weights)
    by_risk = [int(c) for c in np.argsort(-provisional.cluster_scores, kind="stable")]
    kmeans = reorder_clusters(clustering.model, by_risk)
    continuity = match_previous(batch.customer_ids, kmeans.labels_, clustering.k, previous)
    kmeans = reorder_clusters(kmeans, continuity.order)
    labels = kmeans.labels_.copy()
    tiers = fit_risk_tiers(indicators, labels, clustering.k, settings.risk_weights)
    centers = np.asarray(kmeans.cluster_centers_, dtype=np.float64)
    pca = embedding.pca
    # The sample's expected answers come from the fit itself (its embedding and labels), not from the compiled
    # scorer, so loading cross-checks the two paths.
    rows = np.sort(np.random.default_rng(settings.random_state).permutation(batch.n)[:SAMPLE_SIZE])
    points = embedding.components[rows]
    sample = batch.take(rows)
    scores = tiers.terms(indicators[rows]).sum(axis=1)
    rating = rate(tiers.tier_ranks(labels[rows]), tiers.score_ranks(scores),
                  policy.matches(sample, indicators[rows]), policy)  # fmt: skip
    expected = {
        "customers": sample.to_columns(),
        "cluster": labels[rows].tolist(),
        "distance_to_centroid": np.linalg.norm(points - centers[labels[rows]], axis=1).tolist(),
        "risk_score": scores.tolist(),
        "risk_tier": [TIERS[r] for r in rating.risk_rank.tolist()],
    }
    model = SegmentationModel(
        version=version, features=transformer, pca_components=np.asarray(pca.components_, dtype=np.float64),
        pca_mean=np.asarray(pca.mean_, dtype=np.float64),
        explained_variance_ratio=np.asarray(pca.explained_variance_ratio_, dtype=np.float64), centers=centers,
        tiers=tiers, policy=policy, reference_date=reference_date,
        metrics={**clustering.metrics, **quality.metrics(), "smallest_cluster": float(smallest),
                 "training_customers": float(batch.n)},
        k_search=clustering.k_search, trained_at=datetime.now().astimezone(), n_customers=plan.customers,
        settings=settings.model_dump(), input_sha256=input_sha256, run_id=run_id, contract=transformer_class.contract(),
        sample=expected,
    )  # fmt: skip
    return FittedModel(
        model=model, labels=labels, order=continuity.order, previous_labels=continuity.previous_labels,
        new_labels=continuity.new_labels, previous_model_version=continuity.previous_model_version,
        rows=training_rows,
    )  # fmt: skip
