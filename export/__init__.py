"""Per-stage export of a trained model to engine files (ONNX, TensorRT). See issue 4."""
