"""cspine.xray."""
