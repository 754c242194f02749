"""`python -m embodied.world --n 16 --seed 0 --out scenes/apartments`: write procedural apartments."""
from __future__ import annotations

import argparse

from embodied.world.scenes import write_scenes


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m embodied.world", description=__doc__)
    p.add_argument("--n", type=int, default=16, help="number of apartments")
    p.add_argument("--seed", type=int, default=0, help="first seed; apartments use seed .. seed+n-1")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--rooms", type=int, nargs="+", default=None, help="room count, or a LO HI range (2..8)")
    p.add_argument("--object-split", default="all", help="all | train | novel_exemplar | held_out_category")
    p.add_argument("--no-glb", action="store_true", help="write JSON specs only")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    a = p.parse_args(argv)
    rooms = None if a.rooms is None else (a.rooms[0] if len(a.rooms) == 1 else tuple(a.rooms))
    write_scenes(a.n, a.seed, a.out, n_rooms=rooms, quiet=a.quiet, glb=not a.no_glb, object_split=a.object_split)


if __name__ == "__main__":
    main()
