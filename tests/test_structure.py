"""The package's layers, read from its imports (every `import`, module-level or inside a function): the papers
sit above the toolbox, the toolbox never reaches up into a paper, and no module imports itself back through others."""
import ast
from pathlib import Path
import pytest

PKG = Path(__file__).resolve().parents[1] / 'ssl_study'


def _name(path: Path) -> str:
    rel = path.relative_to(PKG.parent).with_suffix('')
    parts = rel.parts[:-1] if rel.name == '__init__' else rel.parts
    return '.'.join(parts)


def _imports(path: Path) -> set[str]:
    "The ssl_study modules `path` imports, resolved from relative and absolute imports alike."
    me, out = _name(path), set()
    pkg = me if path.name == '__init__.py' else me.rsplit('.', 1)[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith('ssl_study')}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ''
            if node.level:
                root = pkg.split('.')[:len(pkg.split('.')) - node.level + 1]
                base = '.'.join(root + ([base] if base else []))
            if not base.startswith('ssl_study'): continue
            for a in node.names:          # `from ssl_study import cache` imports the module ssl_study.cache
                sub = f'{base}.{a.name}'
                out.add(sub if (PKG.parent / sub.replace('.', '/')).with_suffix('.py').exists() else base)
    return {m for m in out if m != me and m not in ('ssl_study', 'ssl_study.papers')}


def graph() -> dict[str, set[str]]:
    return {_name(p): _imports(p) for p in PKG.rglob('*.py') if p.name not in ('_modidx.py',)}


def _cycle(g):
    "One import cycle of `g` as a list of modules, or None."
    state, stack = {}, []
    def visit(m):
        state[m] = 1; stack.append(m)
        for d in sorted(g.get(m, ())):
            if state.get(d) == 1: return stack[stack.index(d):] + [d]
            if d not in state and (c := visit(d)): return c
        state[m] = 2; stack.pop()
    for m in sorted(g):
        if m not in state and (c := visit(m)): return c


def test_the_cycle_finder_finds_a_cycle():
    assert _cycle({'a': {'b'}, 'b': {'c'}, 'c': {'a'}}) == ['a', 'b', 'c', 'a']
    assert _cycle({'a': {'b'}, 'b': set()}) is None


def test_no_import_cycle():
    assert _cycle(graph()) is None


def test_the_toolbox_never_imports_a_paper():
    bad = {m: sorted(d for d in deps if d.startswith('ssl_study.papers')) for m, deps in graph().items()
           if not m.startswith('ssl_study.papers')}
    assert not {m: d for m, d in bad.items() if d}


def test_the_papers_live_in_papers():
    mods = set(graph())
    for p in ('pyramid', 'simclr', 'simclr_method', 'simsiam', 'simsiam_method', 'selfie', 'overlay', 'leaderboard'):
        assert f'ssl_study.papers.{p}' in mods and f'ssl_study.{p}' not in mods


def test_a_pretraining_reaches_fit_without_climbing_back_up():
    "cache.pretrain launches on N devices itself: dist sits below the cache and knows nothing of it."
    g = graph()
    assert 'ssl_study.dist' in g['ssl_study.cache'] and 'ssl_study.cache' not in g['ssl_study.dist']
    assert not {'ssl_study.cache', 'ssl_study.loaders', 'ssl_study.train'} & g['ssl_study.dist']


@pytest.mark.parametrize('path', sorted(p for p in PKG.rglob('*.py') if p.name != '_modidx.py'), ids=lambda p: p.name)
def test_modules_stay_readable(path):
    assert len(path.read_text().splitlines()) <= 420, f"{path.name}: split it (about 400 lines at most)"
