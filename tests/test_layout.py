"""The layout rules of issue 13, checked on the source: the methods import no engine, the
package's import graph has no cycle, and no module outgrows a reader's screenful or two."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / 'distill'
METHOD_LAYERS = ('distill.losses', 'distill.distillers', 'distill.sokd', 'distill.adapters')
TASK_FRAMEWORKS = ('mmseg', 'mmdet', 'diffusers', 'accelerate', 'mmcv')
MAX_LINES = 400


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix('').parts
    return '.'.join(parts[:-1] if parts[-1] == '__init__' else parts)


def imports_of(path: Path, top_level_only: bool = False) -> set[str]:
    """Absolute names of the modules ``path`` imports (relative imports resolved)."""
    tree = ast.parse(path.read_text(), str(path))
    package = (module_name(path) if path.name == '__init__.py'
               else module_name(path).rpartition('.')[0])
    nodes = tree.body if top_level_only else ast.walk(tree)
    found = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ''
            if node.level:
                anchor = package.split('.')[:len(package.split('.')) - node.level + 1]
                base = '.'.join(anchor + ([base] if base else []))
            found.add(base)
            found.update(f'{base}.{alias.name}' for alias in node.names)
    return found


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob('*.py'))}


def test_the_checker_sees_imports():
    """The checks below cannot pass vacuously: the parser finds known imports."""
    assert 'distill.registry' in imports_of(MODULES['distill.losses'])
    assert len(MODULES) > 40


@pytest.mark.parametrize('layer', METHOD_LAYERS)
def test_the_methods_and_adapters_import_no_engine(layer):
    offenders = {name: sorted(i for i in imports_of(path) if i.startswith('distill.engine'))
                 for name, path in MODULES.items() if name.startswith(layer)}
    assert not {k: v for k, v in offenders.items() if v}


@pytest.mark.parametrize('layer', ('distill.losses', 'distill.distillers', 'distill.sokd'))
def test_the_methods_import_no_task_framework(layer):
    offenders = {name: sorted(i for i in imports_of(path)
                              if i.split('.')[0] in TASK_FRAMEWORKS)
                 for name, path in MODULES.items() if name.startswith(layer)}
    assert not {k: v for k, v in offenders.items() if v}


def find_cycle(graph: dict) -> list | None:
    """One cycle of ``graph`` ({node: set of nodes}) as a path, or None. Edges between a
    package and its own submodules are skipped (a package imports its parts)."""
    state, path = {}, []

    def visit(node):
        state[node] = 'open'
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt.startswith(node + '.') or node.startswith(nxt + '.'):
                continue
            if state.get(nxt) == 'open':
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 'done'
        return None

    for name in sorted(graph):
        if name not in state and (cycle := visit(name)):
            return cycle
    return None


def test_the_cycle_finder_finds_cycles():
    assert find_cycle({'a': {'b'}, 'b': {'c'}, 'c': {'a'}}) == ['a', 'b', 'c', 'a']
    assert find_cycle({'a': {'b'}, 'b': {'c'}, 'c': set()}) is None
    assert find_cycle({'p': {'p.x'}, 'p.x': {'p'}}) is None


def test_the_package_import_graph_has_no_cycle():
    """Module-level imports between distill's modules form a DAG (an import inside a
    function, taken lazily at call time, is not part of the graph)."""
    graph = {name: {i for i in imports_of(path, top_level_only=True) if i in MODULES} - {name}
             for name, path in MODULES.items()}
    cycle = find_cycle(graph)
    assert cycle is None, 'import cycle: ' + ' -> '.join(cycle or [])


def test_no_module_is_over_the_line_limit():
    long = {name: n for name, path in MODULES.items()
            if (n := len(path.read_text().splitlines())) > MAX_LINES}
    assert not long, f'modules over {MAX_LINES} lines: {long}'
