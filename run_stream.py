#!/usr/bin/env python3
"""deocclude: restore faces hidden by face-masks (and other occluders) in live or file video.

    python run_stream.py                                   # the bundled demo clip -> out/demo_restored.mp4
    python run_stream.py --input clip.mp4 --output out.mp4
    python run_stream.py --input rtsp://host/cam --output rtsp://host:8554/restored
    python run_stream.py --input 0 --display               # webcam 0 in a window

The only place of the project that exits the process (with the installed ``deocclude`` command, whose
wrapper does the same); the options and their handling live in :mod:`stream.cli`.
"""

from __future__ import annotations

import sys

from stream.cli import EXIT_ERROR, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, build_parser, main

__all__ = ["EXIT_ERROR", "EXIT_INTERRUPTED", "EXIT_OK", "EXIT_USAGE", "build_parser", "main"]

if __name__ == "__main__":
    sys.exit(main())
