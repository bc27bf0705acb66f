"""Site data: declared tabular datasets, loaded into split, standardised arrays in-process."""

from fedsilo.data.site import SiteConfig, SiteConfigError
from fedsilo.data.split import held_out_count, stratified_split
from fedsilo.data.tabular import (
    DatasetError,
    LabelRule,
    OneHot,
    TabularData,
    TabularDatasetSpec,
    load_tabular,
)

__all__ = [
    "DatasetError",
    "LabelRule",
    "OneHot",
    "SiteConfig",
    "SiteConfigError",
    "TabularData",
    "TabularDatasetSpec",
    "held_out_count",
    "load_tabular",
    "stratified_split",
]
