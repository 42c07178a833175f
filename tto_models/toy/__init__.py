"""The ball-to-target toy world, where the teacher loop is to be shown working (world.py: the task family;
files.py: instances and videos on disk; README.md: the models and commands).

`python -m tto_models.toy --help` lists the commands: generate and score instances, train the toy models,
probe the loop.
"""
