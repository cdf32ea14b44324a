"""cspine.ct."""
