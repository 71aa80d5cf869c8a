"""The network and its file formats: pure torch.

Owns the ELIR model (autoencoder, coarse estimator, vector field, the Euler
sampler and the whole restorer), its config, the CPU convolution kernels,
device and precision choice (:mod:`.runtime`), and reading/writing weights
files (:mod:`.checkpoint`). Knows nothing of tasks, the hub, images or faces.

Layer 0. May import: nothing else in elir_cli but the base modules.
"""
