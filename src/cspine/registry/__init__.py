"""Named, importable facts that the CLI and the pipelines read: CT training presets (:mod:`.presets`),
pipeline stages (:mod:`.stages`), dataset splits (:mod:`.splits`) and pretrained weights
(:mod:`.weights`). Nothing in this package imports torch, so listing them is instant."""
