"""Localization: where the model looks, scored against the data set's boxes.

`boxes` reads and checks a box file, `scores` scores a map against boxes (pointing game, energy
inside, IoU), `pipeline` computes the maps over records and scores them.
"""
