"""facevox training: data synthesis, voxel targets, network, loop and ONNX export (needs torch)."""
