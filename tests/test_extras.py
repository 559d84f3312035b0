"""Each extra of ``setup.cfg`` is enough for its framework (README, "Install"): every
third-party module that a task's entry points import, directly or through the library (imports
inside functions included), comes from ``install_requires`` or that task's extra. An import
guarded by ``except ImportError`` (or ``ModuleNotFoundError``) is optional and not counted.
"""
from __future__ import annotations

import ast
import configparser
import importlib.metadata
import re
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
#: the extra that installs each task's framework
TASK_EXTRAS = dict(classification='cls', segmentation='seg', detection='det',
                   diffusion='diffusion')
#: imports the static walk reaches but a task never runs, each with where and why; an entry
#: that the walk no longer reaches fails the test, so the list cannot outlive its reason
NOT_RUN_BY = {
    ('segmentation', 'mmdet'): "engines/mmengine/evaluate.py: DumpDetResults, for a detection "
                               "test.py --out only",
    ('segmentation', 'accelerate'): "engines/core/checkpoints.py: the loader of Accelerate "
                                    "checkpoint folders, which mmengine runs do not write",
    ('detection', 'accelerate'): "engines/core/checkpoints.py, as for segmentation",
}


def requirement_names(lines: str) -> set[str]:
    names = set()
    for line in lines.splitlines():
        line = line.strip()
        if line and not line.startswith('%('):
            names.add(re.split(r'[<>=!~;\[ ]', line)[0].lower().replace('_', '-'))
    return names


def extras() -> tuple[set, dict]:
    parser = configparser.ConfigParser()
    parser.read(REPO / 'setup.cfg')
    base = requirement_names(parser['options']['install_requires'])
    return base, {name: requirement_names(value) for name, value in
                  parser['options.extras_require'].items()}


def optional_import_lines(tree) -> set[int]:
    """Line numbers of imports inside a ``try`` whose handlers catch ImportError."""
    lines = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Try) and any(
                isinstance(h.type, (ast.Name, ast.Tuple)) and
                {'ImportError', 'ModuleNotFoundError'} & {
                    n.id for n in ast.walk(h.type) if isinstance(n, ast.Name)}
                for h in node.handlers):
            for inner in node.body:
                lines |= {n.lineno for n in ast.walk(inner)
                          if isinstance(n, (ast.Import, ast.ImportFrom))}
    return lines


def imported_modules(path: Path) -> set[str]:
    """Absolute module names ``path`` imports (anywhere in it), but the optional ones."""
    tree = ast.parse(path.read_text())
    optional = optional_import_lines(tree)
    names = set()
    for node in ast.walk(tree):
        if getattr(node, 'lineno', None) in optional:
            continue
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
            names |= {f'{node.module}.{alias.name}' for alias in node.names}
    return names


def module_file(name: str) -> Path | None:
    """The source file of a ``distill`` module (or package), None for names that are not
    modules (``from distill.x import a_function``)."""
    base = REPO / Path(*name.split('.'))
    for candidate in (base.with_suffix('.py'), base / '__init__.py'):
        if candidate.is_file():
            return candidate
    return None


def third_party_closure(entry_points) -> set[str]:
    """Top-level third-party modules reached from ``entry_points`` through ``distill``."""
    seen, todo, outside = set(), list(entry_points), set()
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for name in imported_modules(path):
            top = name.split('.')[0]
            if top == 'distill':
                parts = name.split('.')
                for i in range(1, len(parts) + 1):  # the packages on the way are run too
                    found = module_file('.'.join(parts[:i]))
                    if found is not None:
                        todo.append(found)
            elif top not in sys.stdlib_module_names:
                outside.add(top)
    return outside


def distributions(module: str) -> set[str]:
    names = importlib.metadata.packages_distributions().get(module, [module])
    return {n.lower().replace('_', '-') for n in names}


@pytest.mark.parametrize('task', sorted(TASK_EXTRAS))
def test_each_extra_holds_what_its_task_imports(task):
    base, extra = extras()
    provided = base | extra[TASK_EXTRAS[task]]
    entry_points = sorted((REPO / 'tasks' / task).glob('*.py'))
    assert entry_points
    reached = third_party_closure(entry_points)
    missing = {module: sorted(distributions(module)) for module in reached
               if not distributions(module) & provided and (task, module) not in NOT_RUN_BY}
    stale = [module for t, module in NOT_RUN_BY if t == task and module not in reached]
    assert not stale, f'NOT_RUN_BY lists {stale} for {task}, which it no longer imports'
    assert not missing, (f'tasks/{task} imports {missing}, which neither install_requires nor '
                         f'the {TASK_EXTRAS[task]!r} extra of setup.cfg installs')


def test_the_readme_extras_table_says_what_each_extra_adds():
    _, extra = extras()
    readme = (REPO / 'README.md').read_text()
    for name, requirements in extra.items():
        row = re.search(rf'^\|\s*`{re.escape(name)}`\s*\|.*$', readme, re.M)
        assert row, f'the README has no row for the extra {name!r}'
        if name != 'all':
            listed = row.group(0).lower()
            assert all(r in listed for r in requirements), \
                (f'the README row of {name!r} does not name '
                 f'{sorted(r for r in requirements if r not in listed)}')
