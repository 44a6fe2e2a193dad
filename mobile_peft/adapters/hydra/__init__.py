"""Hydra adapters (Kim et al., 2023): parallel + sequential low-rank branches."""

from .config import HYDRA_INITS, HydraConfig, HydraInit
from .layer import HydraLayer

__all__ = ["HYDRA_INITS", "HydraConfig", "HydraInit", "HydraLayer"]
