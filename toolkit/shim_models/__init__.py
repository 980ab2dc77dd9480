"""Python-backend models that `toolkit.shim` copies into a serving repository as `model.py`.

They are never imported from here: Triton's Python backend stub loads the copy, inside the
sandbox, where the project folder is not visible. So each module is self-contained (numpy,
the runtime it drives and `triton_python_backend_utils` only) and takes its settings from
the `parameters` of the config.pbtxt the shim writes.
"""

from pathlib import Path

RUNTIME_MODEL = Path(__file__).with_name("runtime_model.py")
