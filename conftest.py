"""pytest settings shared by every test package (plain `pytest` and Bazel's py_tests both load this file)."""
