"""The ``--set [METHOD:]KEY=VALUE`` items of a comparison: which apply to every method and which
to one, read as the entry points read ``--cfg-options``."""
from __future__ import annotations

import argparse


class _OptionParser(argparse.ArgumentParser):
    def error(self, message):
        raise ValueError(message)


def parse_options(items) -> dict:
    """``KEY=VALUE`` strings read as the entry points' ``--cfg-options`` read them."""
    if not items:
        return {}
    from distill.engines.core.cli_options import ConfigOptionsAction
    parser = _OptionParser(prog='--set', add_help=False)
    parser.add_argument('--set', nargs='+', action=ConfigOptionsAction, default={})
    return parser.parse_args(['--set', *items]).set


def split_sets(sets, methods) -> tuple[list[str], dict]:
    """``[METHOD:]KEY=VALUE`` items: those for every method and those of each method."""
    common, own = [], {m: [] for m in methods}
    if isinstance(sets, dict):
        sets = [f'{k}={v if isinstance(v, str) else repr(v)}' for k, v in sets.items()]
    for item in sets or []:
        if '=' not in item:
            raise ValueError(f'--set {item!r}: not [METHOD:]KEY=VALUE')
        key, value = item.split('=', 1)
        target, _, key = key.rpartition(':')
        if not key:
            raise ValueError(f'--set {item!r}: no key')
        if not target:
            common.append(f'{key}={value}')
            continue
        framework_free = [m for m in methods if m.lower() == target.strip().lower()]
        if not framework_free:
            raise ValueError(f'--set {item!r}: {target!r} is not one of the methods compared '
                             f'({", ".join(methods)})')
        own[framework_free[0]].append(f'{key}={value}')
    return common, own
