"""Training: the torch model and its file format, the training loop (device, precision,
checkpoints), the train stage (split, metrics) and the ONNX export with its parity check.

May import ``mlops.config``, ``mlops.atomic_files`` and ``mlops.data.storage``; the GPU
check imports it on a machine that has only torch.
"""
