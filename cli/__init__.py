"""The command-line tools of stem-sqlite (installed as the ``stem_cli`` package).

Each command is a thin layer over a library call: parse, call, render.
"""
