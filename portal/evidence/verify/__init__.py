"""Offline verification of Jiefen evidence receipts: standard library and `cryptography` only."""
