"""pairless in napari: Train, Denoise and Evaluate widgets and two simulated sample images (npe2 plugin).

Installed with ``pip install 'pairless[napari]'``; napari finds it through the ``napari.manifest``
entry point (``napari.yaml`` beside this file).  Nothing here imports napari or Qt at import time:
the widgets' module is loaded only when napari opens one.
"""
