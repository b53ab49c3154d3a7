"""Simulators of HCM Atom feeds and OCI Notifications, real HTTP servers on loopback."""
