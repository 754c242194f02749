"""`python -m embodied ...`: the `embodied` command without its console script."""
from embodied.cli import main

main()
