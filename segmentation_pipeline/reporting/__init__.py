"""The segment report analysts read: figures, narrative, outliers, assembled into one offline HTML file.

No Dagster here: the ``segment_report`` asset and ``segmentation report`` both call :func:`build_segment_report`.
"""

from segmentation_pipeline.reporting.build import (
    ReportArtifacts,
    build_report,
    build_segment_report,
    latest_report_path,
    load_report_data,
    write_report_files,
)
from segmentation_pipeline.reporting.html import write_html

__all__ = [
    "ReportArtifacts",
    "build_report",
    "build_segment_report",
    "latest_report_path",
    "load_report_data",
    "write_html",
    "write_report_files",
]
