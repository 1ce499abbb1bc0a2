"""KServe's ModelServer serving the service's ONNX file: bench-serving's KServe baseline.

A custom ``kserve.Model``, as KServe's documentation writes one for a framework it has no
runtime for: ``load`` opens an ONNX Runtime CPU session with the service's own session
options (``mlops.serving.predictor.session_options``: same threads, same graph
optimisations), ``predict`` answers the Open Inference Protocol request with one output
``prediction``. ``kserve.ModelServer`` runs it with one worker, its defaults otherwise
(latency logging on, as a KServe deployment has it): REST on ``--port`` (ready at
``/v2/health/ready``), gRPC (the same protocol) on ``--grpc-port`` when given.

``python -m benchmarks.kserve_server --onnx model.onnx --name <model> --port 8080
[--grpc-port 8081]``

KServe parses the process's arguments itself (known ones only), so ours are named apart
from its ``--http_port``/``--grpc_port``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import onnxruntime as ort
from kserve import InferOutput, InferRequest, InferResponse, Model, ModelServer
from kserve.utils.utils import generate_uuid

from mlops.serving.predictor import INPUT, OUTPUT, session_options


class OnnxModel(Model):
    """One ONNX file of the export contract (input ``features``, output ``prediction``)."""

    def __init__(self, name: str, path: Path) -> None:
        super().__init__(name)
        self.path = path
        self.session: ort.InferenceSession | None = None

    def load(self) -> bool:
        self.session = ort.InferenceSession(str(self.path), sess_options=session_options(),
                                            providers=["CPUExecutionProvider"])
        self.ready = True
        return self.ready

    def predict(self, payload: InferRequest, headers: dict[str, str] | None = None,
                ) -> InferResponse:
        """Synchronous, as KServe's own framework servers are: inference on the loop."""
        assert self.session is not None, "load() first"
        features = np.asarray(payload.inputs[0].as_numpy(), dtype=np.float32)
        prediction = self.session.run([OUTPUT], {INPUT: features})[0].reshape(-1)
        output = InferOutput(name=OUTPUT, shape=list(prediction.shape), datatype="FP32")
        output.set_data_from_numpy(prediction, binary_data=payload.use_binary_outputs)
        return InferResponse(response_id=payload.id or generate_uuid(), model_name=self.name,
                             infer_outputs=[output], use_binary_outputs=payload.use_binary_outputs,
                             requested_outputs=payload.request_outputs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--onnx", type=Path, required=True)
    parser.add_argument("--name", required=True, help="model name in the routes")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--grpc-port", type=int, help="serve gRPC too, on this port")
    args, _ = parser.parse_known_args()
    model = OnnxModel(args.name, args.onnx)
    model.load()
    ModelServer(http_port=args.port, grpc_port=args.grpc_port or 0, workers=1,
                enable_grpc=args.grpc_port is not None).start([model])


if __name__ == "__main__":
    main()
