"""A site's declaration of the datasets it offers, kept by the site and read by its client."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from fedsilo.data.tabular import TabularDatasetSpec
from fedsilo.jobs import describe_validation_error
from fedsilo.policy import SitePolicy


class SiteConfigError(ValueError):
    """A site config that cannot be read or does not validate; the message names the fields."""


class SiteConfig(BaseModel):
    """One institution: its name and the datasets that jobs may name."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    site: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{0,62}$")
    datasets: dict[str, TabularDatasetSpec] = Field(default_factory=dict)
    policy: SitePolicy = Field(default_factory=SitePolicy)

    @classmethod
    def load(cls, path: Path, data_dir: Path | None = None) -> SiteConfig:
        """Read YAML; relative dataset paths resolve against `data_dir`, by default the
        config's folder (in Kubernetes the config and the data are separate volumes)."""
        try:
            data: Any = yaml.safe_load(path.read_text())
        except OSError as error:
            raise SiteConfigError(f"cannot read site config {path}: {error.strerror}") from None
        except yaml.YAMLError as error:
            raise SiteConfigError(f"site config {path} is not valid YAML: {error}") from None
        if not isinstance(data, dict):
            raise SiteConfigError(f"invalid site config {path}: expected a mapping of fields")
        try:
            config = cls.model_validate(data)
        except ValidationError as error:
            raise SiteConfigError(describe_validation_error(error, f"site config {path}")) from None
        return config.resolved_against(data_dir or path.parent)

    def resolved_against(self, folder: Path) -> SiteConfig:
        """A copy whose relative dataset paths are taken relative to `folder`."""
        datasets = {
            name: spec.model_copy(update={"path": folder / spec.path})
            if not spec.path.is_absolute()
            else spec
            for name, spec in self.datasets.items()
        }
        return self.model_copy(update={"datasets": datasets})

    def dataset(self, name: str) -> TabularDatasetSpec:
        try:
            return self.datasets[name]
        except KeyError:
            declared = ", ".join(sorted(self.datasets)) or "none"
            raise KeyError(
                f"site '{self.site}' declares no dataset '{name}'; declared datasets: {declared}"
            ) from None

    def write(self, path: Path) -> None:
        path.write_text(yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False))
