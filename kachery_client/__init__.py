"""kachery client: content-addressed storage for scientific data."""

__version__ = "0.1.0"
