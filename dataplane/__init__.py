"""Berth's local data plane: a real Triton Inference Server behind a SageMaker-shaped gateway.

Only the gateway lives here (no Django import). The Triton tools it shares with the
registry's test step (the Triton process, archive extraction, config parsing, the ONNX shim,
the entry-model rule) are in `toolkit`.
"""
