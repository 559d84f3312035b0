"""``--cfg-options`` that also take Python literals with ``dict(...)``.

mmengine's ``DictAction`` parses a value as nested lists/tuples of scalars only. Given
``model.distiller.taps=[dict(student='backbone.layer3',teacher='backbone.layer3')]`` its
``_parse_iterable`` finds no top-level comma inside ``dict(...)``, calls itself on the same
string and dies in a ``RecursionError`` (mmengine 0.10.7). ``ConfigOptionsAction`` parses a
value holding ``dict(`` or ``{`` as a Python literal instead (``ast``: constants, lists,
tuples, dicts and ``dict(key=value, ...)`` calls, nothing else is evaluated), and turns any
value ``DictAction`` cannot parse into a usage error that names the key.

Shared by the entry points: ``parser.add_argument('--cfg-options', nargs='+',
action=ConfigOptionsAction)`` where ``action=DictAction`` was.
"""
from __future__ import annotations

import ast

from mmengine.config import DictAction


def literal(text: str):
    """A Python literal where ``dict(a=1)`` is allowed as ``{'a': 1}``; ValueError otherwise."""

    def convert(node):
        if isinstance(node, ast.Call):
            if not (isinstance(node.func, ast.Name) and node.func.id == 'dict' and not node.args
                    and all(k.arg is not None for k in node.keywords)):
                raise ValueError(f'only dict(key=value, ...) calls are allowed, not '
                                 f'{ast.unparse(node)}')
            return {k.arg: convert(k.value) for k in node.keywords}
        if isinstance(node, ast.Dict):
            return {convert(k): convert(v) for k, v in zip(node.keys, node.values)}
        if isinstance(node, ast.List):
            return [convert(e) for e in node.elts]
        if isinstance(node, ast.Tuple):
            return tuple(convert(e) for e in node.elts)
        return ast.literal_eval(node)  # constants, -1, True, None; raises on anything else

    return convert(ast.parse(text.strip(), mode='eval').body)


class ConfigOptionsAction(DictAction):
    """``DictAction`` (same ``key=value`` forms) that also reads ``dict(...)`` literals."""

    def __call__(self, parser, namespace, values, option_string=None):
        options = dict(getattr(namespace, self.dest, None) or {})
        for item in values or []:
            if '=' not in item:
                parser.error(f'{option_string}: {item!r} is not key=value')
            key, value = item.split('=', maxsplit=1)
            try:
                if 'dict(' in value or '{' in value:
                    options[key] = literal(value)
                else:
                    options[key] = self._parse_iterable(value)
            except (ValueError, SyntaxError, AssertionError, RecursionError) as err:
                parser.error(f'{option_string} {key}: cannot read the value {value!r} '
                             f'({type(err).__name__}: {err}). Lists of dicts are written as '
                             f"Python: {key}=[dict(student='a',teacher='b')]")
        setattr(namespace, self.dest, options)
