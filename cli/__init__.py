"""The `intsr` command line: parses, reports progress and errors, calls the intsr library."""
