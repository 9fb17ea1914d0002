"""The built module and its artifacts."""
from .module import BenchmarkReport, Module, load

__all__ = ["Module", "BenchmarkReport", "load"]
