"""Elevate service."""
