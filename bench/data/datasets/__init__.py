"""Datasets: where labelled Sentinel-2 scenes come from. See :mod:`bench.data.datasets.base` for the
contract; one module per dataset type (``geotiff``, ``cloudsen12``, ``copernicus``, ``sentinelhub``)."""

from bench.data.datasets.base import (
    REFERENCE_TYPES,
    S2_BANDS,
    Dataset,
    Scale,
    SceneData,
    data_root,
    load_dataset,
)

__all__ = ["Dataset", "SceneData", "Scale", "S2_BANDS", "REFERENCE_TYPES", "data_root", "load_dataset"]
