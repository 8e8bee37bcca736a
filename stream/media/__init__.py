"""Media I/O: sources (files, URLs, cameras) and sinks (files, streams, a window)."""
