"""SmartGet: peer-to-peer content distribution for a fleet of edge machines."""

__version__ = "0.1.0"
__all__ = ["__version__"]
