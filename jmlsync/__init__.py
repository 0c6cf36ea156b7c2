"""jmlsync: joiner-mover-leaver lifecycle sync over SCIM 2.0."""

__version__ = "0.1.0"
