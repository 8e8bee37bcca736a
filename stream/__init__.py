"""Live and file video, by what the code does:

- ``stream/media/``: sources (files, URLs, cameras) and sinks (files, streams, a window);
- ``stream/faces/``: detect -> track -> select -> align the faces of a frame;
- ``stream/restore/``: the per-frame flow, written once in ``processor.py`` over an op set
  (``ops.py``: ``numpy_ops.py`` on a CPU, ``torch_frame_ops.py`` on CUDA), mask smoothing, compositing;
- ``pipeline.py`` / ``queues.py`` / ``stats.py``: the threaded pipeline; ``networks.py``: loading the
  networks; ``app.py``: one run assembled from a config; ``cli.py``: the command line.
"""
