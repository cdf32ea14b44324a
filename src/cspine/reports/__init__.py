"""cspine.reports."""
