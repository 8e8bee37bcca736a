"""The Triton Python-backend model that ``python -m engines.triton_repo --python-backend`` copies to
``<repo>/<role>/1/model.py``: it runs ``<repo>/<role>/1/model.onnx`` with onnxruntime on the CPU.

A stand-in for Triton's ``onnxruntime_onnx`` backend where the server has only the Python backend (the
``tritonserver`` bundled in the ``nvidia-pytriton`` wheel): same graph, same runtime, same tensors. The
dynamic batcher hands :meth:`TritonPythonModel.execute` every request it gathered; they run as one
onnxruntime call, concatenated on the batch axis, as the ONNX backend runs a batch.

The Python backend's stub embeds an isolated interpreter (it ignores ``PYTHONPATH``), so directories
listed in ``$DEOCCLUDE_TRITON_PYTHONPATH`` (``os.pathsep``-separated) go onto ``sys.path`` before numpy
and onnxruntime are imported: :mod:`engines.triton_server` points it at ``.venv-triton``'s
site-packages, when this file is imported (the stub imports ``triton_python_backend_utils``, which
imports numpy, right after it). This file imports nothing of this project, because it runs in the
server's interpreter, and only the standard library at module level.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

PYTHONPATH_ENV = "DEOCCLUDE_TRITON_PYTHONPATH"


def extend_sys_path() -> None:
    """Put ``$DEOCCLUDE_TRITON_PYTHONPATH``'s directories first on ``sys.path`` (once each)."""
    for entry in reversed(os.environ.get(PYTHONPATH_ENV, "").split(os.pathsep)):
        if entry and entry not in sys.path:
            sys.path.insert(0, entry)


# At import, not in initialize(): the stub imports triton_python_backend_utils (which imports numpy)
# right after this file, before it calls initialize().
extend_sys_path()


class TritonPythonModel:
    """One onnxruntime session per model instance (``instance_group`` count)."""

    def initialize(self, args: dict[str, str]) -> None:
        import numpy as np
        import onnxruntime as ort
        import triton_python_backend_utils as pb_utils

        self._np, self._pb = np, pb_utils
        config = json.loads(args["model_config"])
        params = {k: v.get("string_value", "") for k, v in config.get("parameters", {}).items()}
        options = ort.SessionOptions()
        threads = int(params.get("intra_threads") or 0)
        if threads > 0:
            options.intra_op_num_threads = threads
        path = os.path.join(args["model_repository"], args["model_version"], "model.onnx")
        self._session = ort.InferenceSession(path, sess_options=options, providers=["CPUExecutionProvider"])
        self._inputs = [i["name"] for i in config["input"]]
        self._outputs = [o["name"] for o in config["output"]]

    def execute(self, requests: list[Any]) -> list[Any]:
        np, pb = self._np, self._pb
        feeds = [{n: pb.get_input_tensor_by_name(r, n).as_numpy() for n in self._inputs} for r in requests]
        sizes = [int(f[self._inputs[0]].shape[0]) for f in feeds]
        batch = {
            n: feeds[0][n] if len(feeds) == 1 else np.concatenate([f[n] for f in feeds]) for n in self._inputs
        }
        try:
            values = self._session.run(self._outputs, batch)
        except Exception as exc:  # onnxruntime's own exception types: every request gets the message
            return [pb.InferenceResponse(error=pb.TritonError(f"onnxruntime: {exc}")) for _ in requests]
        responses, start = [], 0
        for n in sizes:
            tensors = [
                pb.Tensor(name, np.ascontiguousarray(v[start : start + n]))
                for name, v in zip(self._outputs, values, strict=True)
            ]
            responses.append(pb.InferenceResponse(output_tensors=tensors))
            start += n
        return responses

    def finalize(self) -> None:
        self._session = None
