"""The paper notebooks as a reader runs them: JupyterLab in headless Chromium, Run > Run All Cells.

One JupyterLab server (kernels at the smoke preset through `IN_TEST`, results in a temporary folder) serves
both tests. One test opens every paper notebook in the browser, two at a time (a page and a kernel each, one CPU
thread per kernel), and runs it through the Run menu; it waits until each kernel is idle and every code cell has
an execution count, then fails on any output a reader sees in a
pink box: stderr (warnings, text progress bars, even empty ones) or an error. A full-page screenshot of each
notebook lands in outputs/screenshots/. A fixture notebook shows that the detector does catch those outputs.
Skipped where /usr/bin/chromium is missing (Debian: `apt-get install chromium`) or SKIP_BROWSER is set.
These runs are the paper notebooks' smoke test: `make test` leaves them out of nbdev_test when this test runs.
"""
import json, os, re, secrets, signal, socket, subprocess, sys, time, urllib.request
from pathlib import Path
import pytest
from conftest import ROOT

CHROMIUM = Path('/usr/bin/chromium')
CHROMIUM_ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
                 '--disable-background-networking', '--disable-component-update', '--disable-sync']
PAPER_NOTEBOOKS = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / 'nbs').glob('0*_*.ipynb'))
FIXTURE = 'tests/fixtures/reader_sees.ipynb'
SCREENSHOTS = ROOT / 'outputs' / 'screenshots'
SERVER_START_S, PAGE_LOAD_S, RUN_ALL_S = 120, 180, 900      # generous: a 2-core CPU shared with other work
PARALLEL = max(1, min(2, os.cpu_count() or 1))             # notebooks (kernels) running at once, one CPU thread each

pytestmark = [pytest.mark.skipif(bool(os.environ.get('SKIP_BROWSER')), reason='SKIP_BROWSER is set'),
              pytest.mark.skipif(not CHROMIUM.exists(), reason=f'no {CHROMIUM} (Debian: apt-get install chromium; `make browser`)')]

# JupyterLab user settings for the test: never save the notebook (autosave would write outputs into nbs/),
# no news or update checks, and every cell in the DOM (no windowing) so that all outputs can be inspected.
LAB_SETTINGS = {
    '@jupyterlab/docmanager-extension/plugin.jupyterlab-settings': {'autosave': False},
    '@jupyterlab/apputils-extension/notification.jupyterlab-settings': {'fetchNews': 'false', 'checkForUpdates': False},
    '@jupyterlab/notebook-extension/tracker.jupyterlab-settings': {'windowingMode': 'none'},
}

# What the reader sees, read from JupyterLab 4's DOM. Stream outputs and errors both render as
# `.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]` (pink); an error is the one with a
# traceback ("Traceback ..." or, for a SyntaxError, "Cell In[n], line k"). A widget that failed to render shows
# "Error displaying widget".
CELLS_JS = r"""() => {
  const kernel = document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook-ExecutionIndicator');
  const cells = [...document.querySelectorAll('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook .jp-Cell.jp-CodeCell')];
  return {kernel: kernel ? kernel.getAttribute('data-status') : null,
          cells: cells.map(c => ({
            prompt: (c.querySelector('.jp-InputArea-prompt') || {}).textContent || '',
            outputs: [...c.querySelectorAll('.jp-OutputArea-output')].map(o => ({
              mime: o.getAttribute('data-mime-type'), text: o.innerText || ''}))}))};
}"""
# Done: the kernel idle and no cell waiting ("[*]:"), with at least one count. Run All Cells marks every cell
# "[*]:" at once and, when a cell raises, blanks the ones it will not run; so this holds only when it has finished.
DONE_JS = r"""() => {
  const s = (%s)();
  const counted = s.cells.some(c => /^\[\d+\]:$/.test(c.prompt.trim()));
  return s.kernel === 'idle' && counted && !s.cells.some(c => c.prompt.includes('*'));
}""" % CELLS_JS
# Ready: every code cell rendered, and the status bar shows the kernel connected and idle ("Python 3 (ipykernel) |
# Idle"; before that "No Kernel | Initializing", then "... | Connecting"; the toolbar indicator says idle too early).
READY_JS = r"""(n) => {
  const cells = document.querySelectorAll('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook .jp-Cell.jp-CodeCell');
  const status = [...document.querySelectorAll('#jp-main-statusbar .jp-StatusBar-TextItem')].map(e => e.textContent.trim());
  return cells.length === n && status.some(t => / \| Idle$/.test(t) && !t.startsWith('No Kernel'));
}"""
STDERR = 'application/vnd.jupyter.stderr'


def problems(state: dict) -> list[dict]:
    "Every output a reader should not see: stderr, errors, widgets that failed to render."
    out = []
    for i, c in enumerate(state['cells']):
        for o in c['outputs']:
            if o['mime'] == STDERR:
                kind = 'error' if re.search(r'Traceback|Cell In\[\d+\], line \d+', o['text']) else 'stderr'
            elif 'Error displaying widget' in o['text']: kind = 'widget error'
            else: continue
            out.append(dict(cell=i, prompt=c['prompt'].strip(), kind=kind, text=o['text'].strip()[:600]))
    return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def _api(lab: dict, path: str, method: str = 'GET'):
    req = urllib.request.Request(f"{lab['url']}/api/{path}", method=method,
                                 headers={'Authorization': f"token {lab['token']}"})
    with urllib.request.urlopen(req, timeout=10) as r:
        body = r.read()
    return json.loads(body) if body else None


@pytest.fixture(scope='module')
def lab(tmp_path_factory):
    "A JupyterLab server rooted at the project, its kernels at the smoke preset, writing into a temporary folder."
    tmp = tmp_path_factory.mktemp('jupyterlab')
    settings = tmp / 'settings'
    for name, value in LAB_SETTINGS.items():
        (settings / name).parent.mkdir(parents=True, exist_ok=True)
        (settings / name).write_text(json.dumps(value))
    token, port = secrets.token_hex(16), _free_port()
    threads = str(max(1, (os.cpu_count() or 1) // PARALLEL))        # the kernels run PARALLEL at a time
    env = {**os.environ, 'IN_TEST': '1', 'OMP_NUM_THREADS': threads, 'MKL_NUM_THREADS': threads, 'SSL_STUDY_OUTPUTS': str(tmp / 'outputs'),
           'SSL_STUDY_CACHE': str(tmp / 'outputs' / 'cache'), 'JUPYTER_RUNTIME_DIR': str(tmp / 'runtime')}
    cmd = [str(Path(sys.executable).with_name('jupyter')), 'lab', '--no-browser', f'--port={port}',
           '--ServerApp.ip=127.0.0.1', f'--IdentityProvider.token={token}', f'--ServerApp.root_dir={ROOT}',
           f'--LabApp.user_settings_dir={settings}', f'--LabApp.workspaces_dir={tmp / "workspaces"}',
           f'--FileCheckpoints.checkpoint_dir={tmp / "checkpoints"}']      # not .ipynb_checkpoints/ beside the notebooks
    if hasattr(os, 'geteuid') and os.geteuid() == 0: cmd.append('--allow-root')
    log = tmp / 'server.log'
    with open(log, 'w') as f:
        server = subprocess.Popen(cmd, env=env, stdout=f, stderr=subprocess.STDOUT, start_new_session=True)
    info = dict(url=f'http://127.0.0.1:{port}', token=token, outputs=tmp / 'outputs', log=log)
    try:
        deadline = time.time() + SERVER_START_S
        while True:
            try:
                _api(info, 'status'); break
            except OSError:
                if server.poll() is not None or time.time() > deadline:
                    pytest.fail(f'JupyterLab did not start:\n{log.read_text()[-3000:]}')
                time.sleep(0.5)
        yield info
    finally:
        os.killpg(server.pid, signal.SIGTERM)        # the server and its kernels
        try: server.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL); server.wait()


@pytest.fixture(scope='module')
def browser():
    sync_api = pytest.importorskip('playwright.sync_api')
    with sync_api.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        yield b
        b.close()


def start_run_all(lab: dict, browser, notebook: str) -> dict:
    "Open `notebook` (relative to the project root) in JupyterLab and click Run > Run All Cells; returns the open page."
    page = browser.new_context(viewport=dict(width=1400, height=900)).new_page()
    try:
        started = time.time()
        page.goto(f"{lab['url']}/lab/workspaces/{Path(notebook).stem}/tree/{notebook}?reset&token={lab['token']}")
        n_code = sum(c['cell_type'] == 'code' for c in json.loads((ROOT / notebook).read_text())['cells'])
        page.wait_for_function(READY_JS, arg=n_code, timeout=PAGE_LOAD_S * 1000, polling=500)
        if any(c['prompt'].strip() != '[ ]:' for c in page.evaluate(CELLS_JS)['cells']):   # stored with counts
            _menu(page, 'Edit', 'Clear Outputs of All Cells')
        loaded = time.time()
        _menu(page, 'Run', 'Run All Cells')
    except BaseException:
        _close(lab, page, notebook); raise
    return dict(notebook=notebook, page=page, started=started, loaded=loaded)


def finish_run_all(lab: dict, run: dict, screenshot: Path | None = None) -> dict:
    "What the page of a `start_run_all` shows once every cell has run; then the page and its kernel are closed."
    page = run['page']
    try:
        state = page.evaluate(CELLS_JS)
        state.update(load_s=run['loaded'] - run['started'], run_s=time.time() - run['loaded'])
        if screenshot: _full_page_screenshot(page, screenshot)
        return state
    finally: _close(lab, page, run['notebook'])


def is_done(run: dict) -> bool:
    return run['page'].evaluate(DONE_JS)


def _close(lab: dict, page, notebook: str):
    page.context.close()
    try:
        for s in _api(lab, 'sessions'):                  # shut the notebook's kernel down
            if s.get('path') == notebook or (s.get('notebook') or {}).get('path') == notebook:
                _api(lab, f"sessions/{s['id']}", 'DELETE')
    except OSError: pass                                 # the server is gone: the fixture reports it


def run_all_cells(lab: dict, browser, notebook: str, screenshot: Path | None = None) -> dict:
    "Open `notebook` in JupyterLab, Run > Run All Cells, and return what the page shows."
    run = start_run_all(lab, browser, notebook)
    try: run['page'].wait_for_function(DONE_JS, timeout=RUN_ALL_S * 1000, polling=1000)
    except BaseException: _close(lab, run['page'], notebook); raise
    return finish_run_all(lab, run, screenshot)


def run_all_notebooks(lab: dict, browser, notebooks: list[str], parallel: int) -> dict:
    "Run All Cells in every notebook, `parallel` notebooks (pages, kernels) at a time; notebook -> state or error."
    todo, running, states = list(notebooks), [], {}
    try:
        while todo or running:
            while todo and len(running) < parallel:
                nb = todo.pop(0)
                try: running.append(start_run_all(lab, browser, nb))
                except Exception as e: states[nb] = e
            time.sleep(1)
            for run in list(running):
                try: done = is_done(run)
                except Exception as e: done = e
                late = time.time() - run['loaded'] > RUN_ALL_S
                if done is True or late or isinstance(done, Exception):
                    running.remove(run)
                    if done is True:
                        states[run['notebook']] = finish_run_all(lab, run, SCREENSHOTS / f"{Path(run['notebook']).stem}.png")
                    else:
                        _close(lab, run['page'], run['notebook'])
                        states[run['notebook']] = done if isinstance(done, Exception) else TimeoutError(f'not done after {RUN_ALL_S} s')
    finally:
        for run in running: _close(lab, run['page'], run['notebook'])
    return states


def _menu(page, menu: str, item: str):
    "Click `menu` in the menu bar, then its `item`, as a reader does."
    page.locator('.lm-MenuBar-itemLabel', has_text=re.compile(f'^{re.escape(menu)}$')).click()
    page.locator('.lm-Menu-itemLabel', has_text=re.compile(f'^{re.escape(item)}$')).click()


def _full_page_screenshot(page, path: Path):
    "The whole notebook: the window is made as tall as the notebook's scrolled content, then captured."
    page.keyboard.press('Control+b')                       # fold the file browser away
    scroller = "document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-WindowedPanel-outer')"
    height = 900
    for _ in range(3):                                     # grow until the last cell is in view
        extra = page.evaluate(f"""() => {{ const s = {scroller}; s.scrollTop = 0;      // below the window: the last cell's end
                                         const cells = s.querySelectorAll('.jp-Cell');
                                         return cells[cells.length - 1].getBoundingClientRect().bottom
                                                - s.getBoundingClientRect().bottom + 40; }}""")
        if extra <= 0 or height >= 30000: break
        height = int(min(height + extra, 30000))
        page.set_viewport_size(dict(width=1400, height=height))
        page.wait_for_timeout(500)
    page.evaluate(f"() => {{ {scroller}.scrollTop = 0; }}")
    page.wait_for_timeout(500)
    path.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(path), full_page=True)


def _describe(found: list[dict]) -> str:
    return '\n'.join(f"cell {p['cell']} {p['prompt']} ({p['kind']}):\n    {p['text']!r}" for p in found)


def test_paper_notebooks_run_clean_in_jupyterlab(lab, browser):
    "Every paper notebook, Run All Cells in one server, two at a time: no pink output, every cell run in order, nothing saved."
    states = run_all_notebooks(lab, browser, PAPER_NOTEBOOKS, PARALLEL)
    failures = []
    for notebook in PAPER_NOTEBOOKS:
        state = states[notebook]
        if isinstance(state, Exception):
            failures.append(f'{notebook}: {type(state).__name__}: {state}'); continue
        print(f"{notebook}: page + kernel {state['load_s']:.1f} s, Run All Cells {state['run_s']:.1f} s, "
              f"{len(state['cells'])} code cells; screenshot {SCREENSHOTS / (Path(notebook).stem + '.png')}")
        if found := problems(state):
            failures.append(f"{notebook}: a reader sees {len(found)} stderr/error output(s):\n{_describe(found)}")
        prompts = [c['prompt'].strip() for c in state['cells']]
        if prompts != [f'[{i}]:' for i in range(1, len(prompts) + 1)]:
            failures.append(f'{notebook}: not every code cell ran, in order: {prompts}')
        if re.search(f'Saving file at /?{re.escape(notebook)}', lab['log'].read_text()): failures.append(f'JupyterLab saved {notebook}')
    assert not failures, '\n\n'.join(failures)
    assert not (lab['outputs'] / 'quick').exists(), 'the kernel ran the quick preset: IN_TEST did not reach it'


def test_detector_catches_stderr_warning_and_error(lab, browser):
    "The fixture writes to stdout, stderr, warns, shows a tqdm.auto bar, then raises: the test must see exactly that."
    state = run_all_cells(lab, browser, FIXTURE)
    found = problems(state)
    assert [(p['cell'], p['kind']) for p in found] == [(1, 'stderr'), (2, 'stderr'), (4, 'error')], _describe(found)
    assert found[0]['text'] == 'to stderr'
    assert 'UserWarning: a library warning' in found[1]['text']
    assert 'ZeroDivisionError' in found[2]['text']
    # stdout is not flagged; the tqdm.auto bar is a widget (ipywidgets installed), not stderr text
    assert [o['mime'] for o in state['cells'][0]['outputs']] == ['application/vnd.jupyter.stdout']
    assert state['cells'][3]['outputs'] and all(o['mime'] != STDERR for o in state['cells'][3]['outputs'])
    # Run All Cells stops at the error: the last cell never runs (and the wait did not hang on it)
    assert [c['prompt'].strip() for c in state['cells']] == ['[1]:', '[2]:', '[3]:', '[4]:', '[5]:', '[ ]:']
