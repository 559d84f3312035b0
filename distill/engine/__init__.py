"""Pieces shared by the task entry points (the engines); the methods never import these."""
from distill.engine.guards import NonFiniteLossError, check_finite_terms
from distill.engine.metrics import MetricsFile

__all__ = ['NonFiniteLossError', 'check_finite_terms', 'MetricsFile']
