"""Persistence: the DuckDB warehouse every stage reads from and writes to."""

from segmentation_pipeline.warehouse.store import LineageRecord, Warehouse, WarehouseBusy

__all__ = ["LineageRecord", "Warehouse", "WarehouseBusy"]
