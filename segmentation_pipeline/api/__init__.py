"""The real-time scoring API (FastAPI): ``create_app`` builds it, ``segmentation serve`` runs it."""

from segmentation_pipeline.api.app import create_app

__all__ = ["create_app"]
