"""Data shipped with elir-cli: the task manifest and the bundled face detector."""
