"""Berth's local data plane: a real Triton Inference Server behind a SageMaker-shaped gateway.

The modules here carry no Django import, so the registry's test step and the gateway process
share them: safe archive extraction, model configuration parsing, the repository shim that
runs ONNX models through Triton's Python backend, and the Triton process itself.
"""
