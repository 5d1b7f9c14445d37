"""Shared helpers below the data layer: the command-line style (cli), output folders (run_folder), redaction (secrets)."""
