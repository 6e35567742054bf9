"""Test-only: in every process of a job started with BIREFNET_BROKEN_MODEL_TEST set (Ray's
workers inherit the driver's environment), the model fails on every batch as a faulty GPU
would. Put this folder on PYTHONPATH; nothing in the project imports it."""

import importlib.abc
import importlib.util
import os
import sys

TARGET = "birefnet_core.predictor"


class _BreakPredictorOnImport(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name != TARGET:
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        run_module = spec.loader.exec_module

        def exec_module(module):
            run_module(module)

            def broken(self, *args, **kwargs):
                raise RuntimeError("CUDA error: an illegal memory access was encountered")

            module.Predictor.infer_batches = broken

        spec.loader.exec_module = exec_module
        return spec


if os.environ.get("BIREFNET_BROKEN_MODEL_TEST"):
    sys.meta_path.insert(0, _BreakPredictorOnImport())
