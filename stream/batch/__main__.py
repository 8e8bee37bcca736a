"""``python -m stream.batch``: the batch's command line (:func:`stream.batch.cli.main`)."""

from __future__ import annotations

from stream.batch.cli import main

if __name__ == "__main__":  # a spawned pool worker imports this module too, and must not run a batch
    raise SystemExit(main())
