"""CUDA runtime access and the K-slot in-flight stream pipeline shared by the GPU backends."""
