"""The live preview (``--preview``): a small web page and MJPEG streams served by the process."""
