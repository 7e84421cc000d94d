"""segmentation-pipeline: risk segments of a bank's customer risk-summary export."""

__version__ = "0.1.0"
