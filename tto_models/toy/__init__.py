"""The ball-to-target toy world, where the teacher loop is to be shown working (world.py: the task family).

`python -m tto_models.toy --help` lists the commands: generate instances, score videos.
"""
