"""Jobs and rounds: the round core, round protocols, and their collaborators. The modules and
how a new protocol or aggregation rule plugs in are described in README.md beside this file.
"""
