"""``python -m unionfs_sim``: the command-line front end."""

from .cli import main

main()
