"""cspine on ONNX Runtime: export trained models (:mod:`.export`, needs PyTorch) and run them without
PyTorch (:mod:`.runtime`). :mod:`.manifest` describes an export folder and imports neither."""
