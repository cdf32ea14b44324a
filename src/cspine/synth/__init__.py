"""cspine.synth."""
