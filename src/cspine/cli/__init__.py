"""Command-line interface: thin Typer apps that parse arguments, call the Python API and print."""
