"""Validation of a Triton model repository before anything runs it.

Every problem is reported (file, line where known, plain message), not just the first, so a
data scientist fixes them in one go. See https://github.com/triton-inference-server/server/blob/main/docs/user_guide/model_repository.md
and .../model_configuration.md for the rules checked here.
"""

from .info import ValidationReport, find_repository_root
from .problems import Problem
from .repository import validate_repository
from .testcases import check_test_cases, test_cases_schema_problems

__all__ = [
    "Problem",
    "ValidationReport",
    "check_test_cases",
    "find_repository_root",
    "test_cases_schema_problems",
    "validate_repository",
]
