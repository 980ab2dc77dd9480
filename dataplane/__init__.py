"""Berth's local data plane: a real Triton Inference Server behind a SageMaker-shaped gateway.

Only the gateway lives here (no Django import). The Triton tools it shares with the
registry's test step (the Triton process, archive extraction, config parsing, the ONNX shim,
the entry-model rule) are in `toolkit`.

The gateway's request path runs compiled when a current build is present (`dataplane.native`
says how and why): its folder then comes first on this package's path.
"""

import logging as _logging

from dataplane import native as _native

if _native.wanted() and _native.FOLDER.is_dir():
    if _native.current():
        __path__.insert(0, str(_native.FOLDER))
    else:
        _logging.getLogger(__name__).warning(
            "the compiled gateway in %s was built from other sources; running interpreted "
            "until `python -m dataplane.native` builds it again",
            _native.FOLDER,
        )
