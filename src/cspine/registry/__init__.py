"""Named, importable facts that the CLI and the pipelines read: pretrained weights (and, as they move
here, presets, stages and splits). Nothing in this package imports torch, so listing them is instant."""
