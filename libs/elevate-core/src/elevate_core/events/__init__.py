"""Elevate's event contract: CloudEvents 1.0 binary mode on Kafka (ARCHITECTURE.md §2)."""

from elevate_core.events.base import Event, ce_type_for, event_class_for
from elevate_core.events.envelope import Envelope, decode, encode
from elevate_core.events.topics import Topics

__all__ = ["Envelope", "Event", "Topics", "ce_type_for", "decode", "encode", "event_class_for"]
