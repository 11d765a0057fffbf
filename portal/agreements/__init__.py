"""Outcomes: settlement agreements, signing, and what follows them."""
