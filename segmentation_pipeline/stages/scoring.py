"""The fitted segmentation model: every fitted object a run made, in one picklable bundle.

The pipeline's ``cluster_assignments`` and the scoring API both call :meth:`SegmentationModel.assign`, so a
customer scored over HTTP gets exactly the cluster the batch run gave it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime

import numpy as np
import pandas as pd
from sklearn.cluster import KMeans
from sklearn.decomposition import PCA

from segmentation_pipeline import schema
from segmentation_pipeline.config import PipelineSettings
from segmentation_pipeline.stages.cleaning import clean_customers
from segmentation_pipeline.stages.clustering import ClusteringResult, fit_kmeans, reorder_clusters
from segmentation_pipeline.stages.embedding import fit_pca
from segmentation_pipeline.stages.features import CustomerFeatureTransformer
from segmentation_pipeline.stages.tiering import RiskTierModel, fit_risk_tiers, risk_indicators

ASSIGNMENT_COLUMNS = ["customer_id", "cluster", "risk_tier", "risk_score", "distance_to_centroid", "pc1", "pc2"]


@dataclass
class SegmentationModel:
    version: str
    features: CustomerFeatureTransformer
    pca: PCA
    kmeans: KMeans
    tiers: RiskTierModel
    reference_date: date
    metrics: dict[str, float]
    k_search: pd.DataFrame
    trained_at: datetime
    n_customers: int
    settings: dict[str, object] = field(default_factory=dict)
    input_sha256: str | None = None
    run_id: str | None = None

    @property
    def k(self) -> int:
        return int(self.kmeans.n_clusters)

    def embed(self, customers: pd.DataFrame) -> np.ndarray:
        return self.pca.transform(self.features.transform(customers).to_numpy())

    def assign(self, customers: pd.DataFrame) -> pd.DataFrame:
        """Cluster, tier, customer risk score, distance to centroid and plot coordinates of cleaned customers."""
        embedding = self.embed(customers)
        clusters = self.kmeans.predict(embedding)
        distances = np.linalg.norm(embedding - self.kmeans.cluster_centers_[clusters], axis=1)
        return pd.DataFrame(
            {
                "customer_id": customers[schema.ID_COLUMN].to_numpy(dtype="int64"),
                "cluster": clusters.astype("int32"),
                "risk_tier": self.tiers.tier_of(clusters),
                "risk_score": self.tiers.customer_scores(risk_indicators(customers)),
                "distance_to_centroid": distances,
                "pc1": embedding[:, 0],
                "pc2": embedding[:, 1],
            }
        )

    def clean_records(self, records: Sequence[Mapping[str, object]]) -> pd.DataFrame:
        """Customers pushed as records (workbook field names or aliases) -> cleaned rows, exactly as a file's
        rows are cleaned (same parsers, same age/tenure reference date)."""
        raw = pd.DataFrame.from_records(
            [{key: None if value is None else str(value) for key, value in record.items()} for record in records]
        )
        return clean_customers(
            raw, reference_date=self.reference_date, source_file="request", drop_uninformative=False
        ).customers

    def profiles(self) -> pd.DataFrame:
        """Per cluster: tier, score, and the score's terms — what the API's /v1/segments and reports show."""
        out = self.tiers.contributions.add_prefix("contribution_")
        out.insert(0, "risk_score", pd.Series(self.tiers.cluster_scores))
        out.insert(0, "risk_tier", pd.Series(self.tiers.cluster_tiers))
        typical = self.tiers.typical.add_prefix("median_")
        return out.join(typical).rename_axis("cluster").reset_index()


def feature_transformer(settings: PipelineSettings) -> CustomerFeatureTransformer:
    """An unfitted feature transformer configured from the run settings."""
    return CustomerFeatureTransformer(
        knn_neighbors=settings.knn_neighbors,
        rare_level_share=settings.rare_level_share,
        random_state=settings.random_state,
    )


def cluster_and_tier(
    embedding: np.ndarray, customers: pd.DataFrame, settings: PipelineSettings
) -> tuple[ClusteringResult, RiskTierModel]:
    """K-means on the embedding, then tiers; clusters renumbered by risk score so cluster 0 is the riskiest."""
    result = fit_kmeans(
        embedding,
        n_clusters=settings.n_clusters,
        k_range=(settings.k_min, settings.k_max),
        random_state=settings.random_state,
        n_init=settings.n_init,
        silhouette_sample_size=settings.silhouette_sample_size,
    )
    provisional = fit_risk_tiers(customers, result.labels, settings.risk_weights)
    order = sorted(provisional.cluster_scores, key=lambda c: -provisional.cluster_scores[c])
    model = reorder_clusters(result.model, order)
    result = ClusteringResult(
        model=model, k=result.k, labels=model.labels_.copy(), metrics=result.metrics, k_search=result.k_search
    )
    return result, fit_risk_tiers(customers, result.labels, settings.risk_weights)


def train_segmentation_model(
    customers: pd.DataFrame,
    settings: PipelineSettings,
    *,
    reference_date: date,
    version: str,
    input_sha256: str | None = None,
    run_id: str | None = None,
) -> SegmentationModel:
    """Every stage after cleaning in one call (the Dagster assets run the same stages one asset at a time)."""
    transformer = feature_transformer(settings).fit(customers)
    features = transformer.transform(customers)
    embedding = fit_pca(features.to_numpy(), settings.pca_variance, settings.random_state)
    clustering, tiers = cluster_and_tier(embedding.components, customers, settings)
    return SegmentationModel(
        version=version,
        features=transformer,
        pca=embedding.pca,
        kmeans=clustering.model,
        tiers=tiers,
        reference_date=reference_date,
        metrics=clustering.metrics,
        k_search=clustering.k_search,
        trained_at=datetime.now().astimezone(),
        n_customers=len(customers),
        settings=settings.model_dump(),
        input_sha256=input_sha256,
        run_id=run_id,
    )
