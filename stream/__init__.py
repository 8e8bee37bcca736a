"""Live and file video: sources, sinks, the threaded pipeline, the face front-end, smoothing, compositing."""
