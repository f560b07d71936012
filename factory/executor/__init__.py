"""Runs a graph of stages on engine pools: on Ray (the real one) or in process. See core.py."""

from factory.executor.core import Executor, FatalRunError, Interrupted

__all__ = ["Executor", "FatalRunError", "Interrupted"]
