"""cspine.models."""
