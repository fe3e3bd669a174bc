"""Elevate notifier: tells approvers, requesters and the security team what concerns them."""
