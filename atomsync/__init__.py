"""atomsync: keep downstream systems in step with Oracle HCM Cloud Atom feeds."""

__version__ = "0.1.0"
