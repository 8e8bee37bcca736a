"""Restoration of the located faces of a frame: the per-frame flow and the ops it runs on."""
