"""Every ```python block of README.md and docs/*.md runs as written, each as a test of its own.

A block runs in a fresh namespace (it must import what it uses: a block that leans on an earlier
block's imports fails here as it would for a reader who copies it alone) and in a temporary
working directory (what it writes, ``student.pth``, lands there). Tracebacks point at the
Markdown file and its line numbers. Test ids are the file, the heading the block sits under and
its number under that heading: ``README.md:distil-your-own-classifier-from-python:1``.

A block that is deliberately a fragment (it needs a data set, a download or the output of a
command) carries an HTML comment on the line before its fence,

    <!-- fragment: WHY; the complete form is in WHERE -->

where WHERE is a heading of a Markdown page in quotes (``"Distil your own classifier from
Python"``) or a file of the repository, optionally with a name that occurs in it
(``tests/test_diffusion_train.py (test_output_dir_is_a_ddpm_pipeline_of_the_student)``). Such a
block is skipped; its marker is checked: WHERE must exist.

Shell blocks (```bash, ```sh, ```shell) are not run here.

A small extractor rather than a documentation-testing package: Sybil runs the blocks of a
document in one shared namespace, in order (so a block that forgets an import passes when an
earlier block made it, the failure this module exists to catch), collects from the Markdown
files through conftest.py rather than from a test module, names its items by line and column,
and its skip directive carries no "where is the complete form"; pytest-examples runs each block
in a namespace of its own but requires black and ruff, and marks skips in the fence's info
string rather than in a comment the rendered page hides.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / 'README.md', *sorted((REPO / 'docs').glob('*.md'))]

FENCE = re.compile(r'^(?P<indent> *)(?P<ticks>`{3,}|~{3,})\s*(?P<info>[^`\s]*)')
HEADING = re.compile(r'^#{1,6}\s+(?P<title>.+?)\s*#*\s*$')
MARKER = re.compile(r'^\s*<!--\s*fragment:(?P<text>.*?)-->\s*$')
WHERE = re.compile(r'the complete form is in\s+(?:"(?P<heading>[^"]+)"|(?P<path>[\w./-]+)'
                   r'(?:\s+\((?P<name>[\w.]+)\))?)')


@dataclass(frozen=True)
class Block:
    """One fenced code block of a Markdown page."""

    page: Path
    heading: str       # the closest heading above it ('' before the first)
    number: int        # its number among the python blocks under that heading (from 1)
    language: str      # the fence's info string: 'python', 'bash', '' ...
    line: int          # the line of its first code line (1-based)
    source: str
    fragment: str | None  # the text of its fragment marker, None if it has none

    @property
    def id(self) -> str:
        slug = re.sub(r'[^a-z0-9]+', '-', self.heading.lower()).strip('-') or 'top'
        return f'{self.page.name}:{slug}:{self.number}'


def read_blocks(page: Path, text: str | None = None) -> list[Block]:
    """The fenced blocks of ``page`` (or of ``text``, read as that page), in order."""
    lines = (page.read_text() if text is None else text).splitlines()
    blocks, heading, counts, index = [], '', {}, 0
    while index < len(lines):
        line = lines[index]
        fence = FENCE.match(line)
        if fence is None:
            title = HEADING.match(line)
            if title:
                heading = title.group('title').strip()
            index += 1
            continue
        indent, ticks = len(fence.group('indent')), fence.group('ticks')
        end = index + 1
        while end < len(lines) and not lines[end].strip().startswith(ticks):
            end += 1
        # a fence indented in a list: its lines lose that indent (and no more)
        body = [code[min(indent, len(code) - len(code.lstrip(' '))):]
                for code in lines[index + 1:end]]
        language = fence.group('info').lower()
        previous = next((lines[i] for i in range(index - 1, -1, -1) if lines[i].strip()), '')
        marker = MARKER.match(previous)
        number = 0
        if language in ('python', 'py'):
            counts[heading] = number = counts.get(heading, 0) + 1
        blocks.append(Block(page, heading, number, language, index + 2, '\n'.join(body) + '\n',
                            marker.group('text').strip() if marker else None))
        index = end + 1
    return blocks


def python_blocks() -> list[Block]:
    return [block for page in PAGES for block in read_blocks(page)
            if block.language in ('python', 'py')]


def headings() -> set[str]:
    return {match.group('title').strip() for page in PAGES
            for match in map(HEADING.match, page.read_text().splitlines()) if match}


def check_fragment_marker(text: str) -> None:
    """A fragment marker names where the complete form is, and that place exists."""
    where = WHERE.search(text)
    assert where, (f'fragment marker {text!r} does not say where the complete form is: '
                   f'"...; the complete form is in \\"HEADING\\"" or "... in PATH (NAME)"')
    if where.group('heading'):
        assert where.group('heading') in headings(), (
            f'fragment marker {text!r}: no heading {where.group("heading")!r} in '
            f'{[page.name for page in PAGES]}')
        return
    path = REPO / where.group('path')
    assert path.is_file(), f'fragment marker {text!r}: no file {where.group("path")}'
    if where.group('name'):
        assert where.group('name') in path.read_text(), (
            f'fragment marker {text!r}: {where.group("path")} has no {where.group("name")!r}')


BLOCKS = python_blocks()


@pytest.mark.parametrize('block', BLOCKS, ids=[block.id for block in BLOCKS])
def test_python_example_runs_as_written(block, tmp_path, monkeypatch):
    if block.fragment is not None:
        check_fragment_marker(block.fragment)
        pytest.skip(f'a fragment: {block.fragment}')
    monkeypatch.chdir(tmp_path)
    # the block's own line numbers, so that a traceback points into the Markdown file
    code = compile('\n' * (block.line - 1) + block.source, str(block.page), 'exec')
    exec(code, {'__name__': '__main__', '__file__': str(block.page)})


def test_the_pages_have_examples_and_no_stray_fragment_markers():
    """The extractor finds the README's recipe; a fragment marker stands before a python
    block (a marker before anything else would mark nothing)."""
    assert 'README.md:distil-your-own-classifier-from-python:1' in {b.id for b in BLOCKS}
    for page in PAGES:
        marked = {block.line for block in read_blocks(page) if block.fragment is not None}
        python = {block.line for block in read_blocks(page) if block.language in ('python', 'py')}
        assert marked <= python, f'{page.name}: fragment markers before non-python blocks'
        lines = page.read_text().splitlines()
        markers = [i for i, line in enumerate(lines) if MARKER.match(line)]
        assert len(markers) == len(marked), (
            f'{page.name}: a fragment marker on line(s) {[i + 1 for i in markers]} is not right '
            f'before a code fence')


SAMPLE = '''# Title

```python
print('top')
```

## A section

Text.

<!-- fragment: needs a data set; the complete form is in "A section" -->
```python
run(my_data)
```

```bash
python tasks/x/train.py
```

   ```python
   indented = True
   ```

### Another

```python
x = 1
```
'''


def test_the_extractor_reads_fences_headings_numbers_and_markers():
    blocks = read_blocks(Path('SAMPLE.md'), SAMPLE)
    assert [(b.language, b.heading, b.number, b.line) for b in blocks] == [
        ('python', 'Title', 1, 4), ('python', 'A section', 1, 13), ('bash', 'A section', 0, 17),
        ('python', 'A section', 2, 21), ('python', 'Another', 1, 27)]
    assert [b.id for b in blocks if b.number] == [
        'SAMPLE.md:title:1', 'SAMPLE.md:a-section:1', 'SAMPLE.md:a-section:2',
        'SAMPLE.md:another:1']
    assert blocks[1].fragment == 'needs a data set; the complete form is in "A section"'
    assert blocks[3].source == 'indented = True\n' and blocks[0].fragment is None


@pytest.mark.parametrize('text,message', [
    ('needs a data set', 'does not say where the complete form is'),
    ('needs a data set; the complete form is in "No such heading"', 'no heading'),
    ('x; the complete form is in tests/no_such_file.py', 'no file'),
    ('x; the complete form is in tests/conftest.py (no_such_name_here)', 'has no'),
])
def test_a_fragment_marker_must_name_an_existing_complete_form(text, message):
    with pytest.raises(AssertionError, match=re.escape(message)):
        check_fragment_marker(text)
    check_fragment_marker('x; the complete form is in "Distil your own classifier from Python"')
    check_fragment_marker('x; the complete form is in tests/test_docs_examples.py '
                          '(check_fragment_marker)')
