"""Triton tools shared by the registry's test step and the local data plane.

No Django import here: the gateway and the sandboxed Triton it launches use these modules
without the portal's settings.
"""
