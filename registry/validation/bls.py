"""Calls from a Python model to other models through BLS (business logic scripting), found
statically in its model.py.

Under SageMaker's Triton each package is a repository of its own with model namespacing on,
and only the entry model and its ensemble steps are loaded: a call by plain name to a sibling
model (`pb_utils.InferenceRequest(model_name="add_sub", ...)`, `pb_utils.load_model(...)`)
answers "Model 'add_sub' is not ready" there. See
https://github.com/triton-inference-server/python_backend#business-logic-scripting
"""

from __future__ import annotations

import ast
from dataclasses import dataclass

PYTHON_BACKEND_MODULE = "triton_python_backend_utils"
# The BLS entry points whose first argument (or `model_name=`) names the model called.
CALLS = ("InferenceRequest", "load_model")
# Far above any hand-written model.py; a larger one is not read (bounded before parsing).
MAX_MODEL_SOURCE_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True)
class BlsCall:
    """One call naming a model by a string literal."""

    line: int
    function: str  # "InferenceRequest" or "load_model"
    model_name: str


def _aliases(tree: ast.Module) -> tuple[set[str], dict[str, str]]:
    """Names the module is imported as, and {local name: BLS function} for functions imported
    from it (`from triton_python_backend_utils import InferenceRequest as Request`)."""
    modules: set[str] = set()
    functions: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == PYTHON_BACKEND_MODULE:
                    modules.add(alias.asname or alias.name)
        elif isinstance(node, ast.ImportFrom) and node.module == PYTHON_BACKEND_MODULE:
            for alias in node.names:
                if alias.name == "*":
                    functions.update({name: name for name in CALLS})
                elif alias.name in CALLS:
                    functions[alias.asname or alias.name] = alias.name
    return modules, functions


def _called_function(func: ast.expr, modules: set[str], functions: dict[str, str]) -> str | None:
    if (
        isinstance(func, ast.Attribute)
        and func.attr in CALLS
        and isinstance(func.value, ast.Name)
        and func.value.id in modules
    ):
        return func.attr
    if isinstance(func, ast.Name):
        return functions.get(func.id)
    return None


def _model_name_argument(call: ast.Call) -> ast.expr | None:
    for keyword in call.keywords:
        if keyword.arg == "model_name":
            return keyword.value
    if call.args and not isinstance(call.args[0], ast.Starred):
        return call.args[0]
    return None


def find_bls_calls(source: str) -> list[BlsCall] | None:
    """The BLS calls of a model.py that name their model with a string literal, in line
    order; None when the source does not parse (the test step reports that model's load
    failure). A name computed at run time is not followed."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None
    modules, functions = _aliases(tree)
    if not modules and not functions:
        return []
    found: list[BlsCall] = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        function = _called_function(node.func, modules, functions)
        if function is None:
            continue
        argument = _model_name_argument(node)
        if isinstance(argument, ast.Constant) and isinstance(argument.value, str):
            found.append(BlsCall(node.lineno, function, argument.value))
    return sorted(found, key=lambda call: call.line)
