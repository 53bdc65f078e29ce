"""chunkref: cloud-friendly, versioned, verifiable access to array data."""

from chunkref import errors
from chunkref.config import config

__version__ = "0.1.0"

__all__ = ["__version__", "config", "errors"]
