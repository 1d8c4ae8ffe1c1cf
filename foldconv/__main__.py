"""``python -m foldconv <command> [key=value ...]``: the same as the installed ``foldconv`` command.

Example: ``python -m foldconv sweep grid=quick fold.r=2`` (``python -m foldconv --help`` lists the commands).
"""
from foldconv.experiments.cli import main

if __name__ == "__main__":
    main()
