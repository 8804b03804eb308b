"""The commands (``fkp-*``): each parses its arguments and calls the package."""
