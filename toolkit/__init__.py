"""Triton tools shared by the registry's test step and the local data plane.

No Django import here: the gateway and the sandboxed Triton it launches use these modules
without the portal's settings. `triton` (the server process and its client), `shim` (ONNX
and TorchScript models through the Python backend), `archive` (safe extraction),
`modelconfig` (config.pbtxt), `repository` (model folders, the entry-model rule), `codec`,
`comparison`, `limits`, `yamlsafe`, `sandbox`, and `examples` (demo repositories).
"""
