"""Elevate shared runtime."""
