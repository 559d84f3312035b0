"""Pieces shared by the task entry points (the engines); the methods never import these."""
from distill.engines.guards import NonFiniteLossError, check_finite_terms
from distill.engines.metrics_file import MetricsFile

__all__ = ['NonFiniteLossError', 'check_finite_terms', 'MetricsFile']
