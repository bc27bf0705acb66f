"""Site data: declared tabular datasets, loaded into split, standardised arrays in-process."""

from fedsilo.data.encoding import DatasetError, OneHot, Ordinal
from fedsilo.data.labels import LabelRule, resolve_task
from fedsilo.data.site import SiteConfig, SiteConfigError
from fedsilo.data.split import held_out_count, stratified_split
from fedsilo.data.tabular import TabularData, TabularDatasetSpec, load_tabular

__all__ = [
    "DatasetError",
    "LabelRule",
    "OneHot",
    "Ordinal",
    "SiteConfig",
    "SiteConfigError",
    "TabularData",
    "TabularDatasetSpec",
    "held_out_count",
    "load_tabular",
    "resolve_task",
    "stratified_split",
]
