"""The static page of ``python -m tlkit export MODEL.pt --web DIR``: data files that :mod:`tlkit.export.web` copies.

A package only so that every install (wheel, editable, Colab) keeps the files.
"""
