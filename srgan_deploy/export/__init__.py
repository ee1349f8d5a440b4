"""Export stage: weights -> verified ONNX -> FP16 TensorRT engine (+ Triton model repository)."""
