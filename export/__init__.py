"""Per-stage export of a trained model to engine files: ONNX, TensorRT (docs/engine.md)."""
