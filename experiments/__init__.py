"""Experiments: pinned configs, a DAG of stages, run directories with provenance, and executors."""
