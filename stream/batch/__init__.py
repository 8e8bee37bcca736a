"""A collection of video files restored as tasks: ``python -m stream.batch --inputs 'videos/*.mp4' --out restored/``.

Each file is one task that runs the app's file pipeline (:func:`stream.app.run`), on Ray (a cluster or a
local one) or locally; outputs are renamed into place when finished and recorded in a sidecar, so a rerun
skips finished files (:mod:`stream.batch.resume`) and a failed file is retried and reported while the
others continue (:mod:`stream.batch.runners`). The command line is :mod:`stream.batch.cli`.
"""
