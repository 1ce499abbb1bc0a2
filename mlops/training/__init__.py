"""Training: the torch model and its file format, a team's own network (factory) and the
shipped architectures, the training loop (device, precision, checkpoints), the train stage
(split, metrics, baseline) and the ONNX export with its parity check and encoding graph.

May import ``mlops.config``, ``mlops.atomic_files``, ``mlops.data.storage`` and
``mlops.data.encoding``; the GPU check imports it on a machine that has only torch.
"""
