"""Applying a denoiser: tiling, engines, ONNX export, out-of-core blocks, many files."""
