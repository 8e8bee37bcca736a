"""Faces in a frame: detect -> track -> select -> align (:mod:`stream.faces.front_end`, :mod:`stream.faces.tracker`)."""
