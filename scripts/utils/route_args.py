"""Split one command line between several programs by the flags each of them accepts.

    python scripts/utils/route_args.py make_hdf5.py calculate_inception_moments.py -- ARGS...

prints one bash array assignment per program (`ARGS_0=(...)`, `ARGS_1=(...)`, quoted for
`eval`): each holds, in their order, the flags of ARGS (with their values) that the program's
`prepare_parser()` knows, so a flag both know goes to both. A flag none of them knows, or an
argument that is no flag, is one `error:` line and exit status 2. scripts/utils/prepare_data.sh
uses it so that `--inception_weights PATH` reaches calculate_inception_moments.py only.
"""
import argparse
import importlib.util
import os
import shlex
import sys
from typing import List, Sequence


def load_parser(program: str) -> argparse.ArgumentParser:
    """`prepare_parser()` of the program file `program` (run from the repository root)."""
    found = importlib.util.spec_from_file_location(os.path.splitext(program)[0], program)
    module = importlib.util.module_from_spec(found)
    found.loader.exec_module(module)
    return module.prepare_parser()


def values_taken(action: argparse.Action, rest: Sequence[str]) -> int:
    """How many of the arguments `rest` that follow `action`'s flag are its values."""
    nargs = action.nargs
    if nargs is None:
        return 1
    if isinstance(nargs, int):
        return nargs
    limit = 1 if nargs == '?' else len(rest)  # '?', '*' or '+': up to the next flag
    count = 0
    while count < limit and count < len(rest) and not rest[count].startswith('-'):
        count += 1
    return count


def route(args: Sequence[str], parsers: Sequence[argparse.ArgumentParser],
          names: Sequence[str]) -> List[List[str]]:
    """The arguments of `args` that each parser takes; a ValueError for one none takes."""
    routed: List[List[str]] = [[] for _ in parsers]
    i = 0
    while i < len(args):
        flag = args[i].split('=', 1)[0]
        takers = [k for k, p in enumerate(parsers) if flag in p._option_string_actions]
        if not flag.startswith('-') or not takers:
            what = 'a flag' if flag.startswith('-') else 'an argument'
            raise ValueError(f'{args[i]!r} is {what} of none of {", ".join(names)} '
                             f'(see their --help)')
        action = parsers[takers[0]]._option_string_actions[flag]
        n = 0 if '=' in args[i] else values_taken(action, args[i + 1:])
        for k in takers:
            routed[k].extend(args[i:i + 1 + n])
        i += 1 + n
    return routed


def main(argv: Sequence[str]) -> None:
    if '--' not in argv:
        sys.exit('usage: route_args.py PROGRAM.py [PROGRAM.py ...] -- ARGS...')
    split = list(argv).index('--')
    programs, args = argv[:split], argv[split + 1:]
    parsers = [load_parser(p) for p in programs]
    from utils import exit_on_user_error  # the project's: one `error:` line, exit status 2
    with exit_on_user_error():
        routed = route(args, parsers, programs)
    for k, group in enumerate(routed):
        print(f'ARGS_{k}=({" ".join(shlex.quote(a) for a in group)})')


if __name__ == '__main__':
    sys.path.insert(0, os.getcwd())  # the programs import the project's modules
    main(sys.argv[1:])
