"""cspine.metrics."""
