"""Durable cancellation of e-signature requests."""
