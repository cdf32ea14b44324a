"""Preprocessing: orientation, windowing, resampling and the on-disk study cache."""
