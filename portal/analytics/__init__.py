"""Oversight: statistics, early warnings and risk notices, template-complaint detection (likeness),
the anonymised similar-case library, and consumer guidance."""
