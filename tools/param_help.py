"""Put each parameter's quick-preset value into the comment of the paper notebooks' `parameters` cells.

papermill's `--help-notebook` prints each line's comment after "(default None)"; the defaults are the presets
(`PRESETS[scale]` in the paper's module), so the comment ends with `(quick: <value>)`, generated from the module.
Run after changing a quick preset: `python tools/param_help.py` (rewrites the cells); `--check` only reports.
tests/test_param_help.py checks that every comment names its quick value.
"""
import importlib, json, re, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAPER_MODULES = ('pyramid', 'simclr', 'simsiam', 'selfie', 'overlay', 'leaderboard')
LINE = re.compile(r'^(?P<name>\w+)(?P<decl>\s*:\s*\w+\s*=\s*None)(?P<pad>\s*)(?:#\s?(?P<help>.*?))?\s*$')
SUFFIX = re.compile(r'\s*\(quick: [^()]*\)$')


def quick_text(value) -> str:
    "How a quick-preset value is written in the comment: as `-p name value` takes it (strings unquoted)."
    return str(value)


def with_quick_values(source: str, quick: dict) -> str:
    "The parameters cell `source` with `(quick: value)` at the end of the comment of each parameter of `quick`."
    out = []
    for line in source.split('\n'):
        m = LINE.match(line)
        if m and m['name'] in quick:
            help = SUFFIX.sub('', m['help'] or '').rstrip()
            note = f"(quick: {quick_text(quick[m['name']])})"
            line = f"{m['name']}{m['decl']}{m['pad'] or '  '}# {help + ' ' if help else ''}{note}"
        out.append(line)
    return '\n'.join(out)


def papers():
    "(notebook path, quick preset) of every paper module."
    sys.path.insert(0, str(ROOT))
    for name in PAPER_MODULES:
        m = importlib.import_module(f'ssl_study.papers.{name}')
        yield ROOT / m.NOTEBOOK, m.PRESETS['quick']


def parameters_cell(nb: dict) -> dict:
    return next(c for c in nb['cells'] if 'parameters' in c.get('metadata', {}).get('tags', []))


def main(check: bool = False) -> int:
    stale = []
    for path, quick in papers():
        nb = json.loads(path.read_text())
        cell = parameters_cell(nb)
        src = ''.join(cell['source'])
        new = with_quick_values(src, quick)
        if new == src: continue
        stale.append(path.relative_to(ROOT).as_posix())
        if not check:
            cell['source'] = new if isinstance(cell['source'], str) else new.splitlines(keepends=True)
            path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + '\n')
    print(('stale: ' if check else 'updated: ') + (', '.join(stale) or 'none'))
    return 1 if check and stale else 0


if __name__ == '__main__':
    sys.exit(main(check='--check' in sys.argv[1:]))
