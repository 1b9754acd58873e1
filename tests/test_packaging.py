"""What a user gets is what we mean to ship: the built sdist and wheel, the wheel installed
into a clean venv, README.md as the package index shows it, and the documentation site.

- The wheel holds ``ciba_middleware`` only (no ``example_app``), passes ``twine check
  --strict`` and ``check-wheel-contents``, and its metadata is the one in pyproject.toml:
  one version (``ciba_middleware.__version__``), Werkzeug the only dependency, gunicorn an
  extra, Python 3.11-3.13, the license as a PEP 639 expression.
- Installed alone into a clean venv, outside the repository: the package imports,
  ``example_app`` does not, the command prints its version and checks a configuration,
  ``serve`` says how to get gunicorn; with the ``server`` extra it serves a fail call.
- The sdist holds every file of the repository, so that its test suite runs from it
  (noxfile.py runs it on 3.11, 3.12 and 3.13 from there).
- README.md's links, and those of every page of docs/, are relative and name files and
  headings of the repository, so that a clone reads offline; README's Python snippets pass
  ``mypy --strict`` outside the repository, where only the installed package is found.
- The site builds with ``mkdocs build --strict`` (a broken anchor fails it), loads nothing
  from another host, and draws its Mermaid diagrams in chromium with every other host refused.
"""

from __future__ import annotations

import email.parser
import email.policy
import functools
import html.parser
import http.server
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import threading
import time
import tomllib
import venv
import zipfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from email.message import Message
from importlib import metadata
from pathlib import Path

import pytest
import requests
import yaml
from conftest import ROOT, SERVICE, SERVICE_TOKEN, free_port, unreachable
from playwright.sync_api import Route, sync_playwright

import ciba_middleware
from ciba_middleware import cli, sha256_hex

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
URLS: dict[str, str] = PYPROJECT["project"]["urls"]
#: The one documentation address: README.md links into the docs start with it.
DOCS_URL = URLS["Documentation"]
SOURCE_URL = URLS["Source"]
VERSION = ciba_middleware.__version__
V3_PATH = f"/api/{SERVICE}/backchannel/authentication/fail"
CHROMIUM = "/usr/bin/chromium"


def run(
    argv: list[str], *, cwd: Path | None = None, env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=300, check=False)


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, f"{result.args} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
    return result.stdout


# -- the artefacts ------------------------------------------------------------------------


@dataclass(frozen=True)
class Dist:
    sdist: Path
    wheel: Path

    def wheel_metadata(self) -> Message:
        with zipfile.ZipFile(self.wheel) as wheel:
            text = wheel.read(f"ciba_middleware-{VERSION}.dist-info/METADATA").decode()
        return email.parser.Parser(policy=email.policy.compat32).parsestr(text)


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Dist:
    """``python -m build`` from the checkout: the sdist, then the wheel built from the sdist."""
    out = tmp_path_factory.mktemp("dist")
    ok(run([sys.executable, "-m", "build", "--outdir", str(out), str(ROOT)]))
    (sdist,) = out.glob("*.tar.gz")
    (wheel,) = out.glob("*.whl")
    return Dist(sdist, wheel)


def test_the_wheel_holds_the_package_only(dist: Dist) -> None:
    with zipfile.ZipFile(dist.wheel) as wheel:
        names = wheel.namelist()
    tops = {name.split("/")[0] for name in names}
    assert tops == {"ciba_middleware", f"ciba_middleware-{VERSION}.dist-info"}
    assert "ciba_middleware/py.typed" in names
    assert "ciba_middleware/stores/sqlite.py" in names
    assert f"ciba_middleware-{VERSION}.dist-info/licenses/LICENSE" in names


def test_the_artefacts_pass_twine_and_check_wheel_contents(dist: Dist) -> None:
    ok(run([sys.executable, "-m", "twine", "check", "--strict", str(dist.sdist), str(dist.wheel)]))
    ok(run([sys.executable, "-m", "check_wheel_contents", str(dist.wheel)]))


def test_the_wheel_metadata(dist: Dist) -> None:
    meta = dist.wheel_metadata()
    assert meta["Name"] == "ciba-middleware"
    assert meta["Version"] == VERSION
    assert meta["License-Expression"] == "Apache-2.0"
    assert meta.get_all("License-File") == ["LICENSE"]
    assert meta["Requires-Python"] == ">=3.11"
    requires = meta.get_all("Requires-Dist") or []
    assert [r for r in requires if "extra ==" not in r] == ["Werkzeug>=3.0"]
    assert 'gunicorn>=22.0; extra == "server"' in requires
    assert {"server", "redis", "postgres", "flask", "metrics", "demo", "test"} <= set(
        meta.get_all("Provides-Extra") or []
    )
    classifiers = set(meta.get_all("Classifier") or [])
    versions = {
        c.rpartition(" :: ")[2] for c in classifiers if re.fullmatch(r"Programming Language :: Python :: 3\.\d+", c)
    }
    assert versions == {"3.11", "3.12", "3.13"}
    assert {
        "Typing :: Typed",
        "Framework :: Flask",
        "Topic :: Internet :: WWW/HTTP :: WSGI :: Middleware",
    } <= classifiers
    # PEP 639: the license is the expression above; a license classifier beside it is an error.
    assert not [c for c in classifiers if c.startswith("License ::")]
    urls = dict(url.split(", ", 1) for url in meta.get_all("Project-URL") or [])
    assert urls == URLS
    assert meta["Description-Content-Type"] == "text/markdown"
    assert meta.get_payload() == (ROOT / "README.md").read_text(encoding="utf-8")


def test_the_version_is_written_once() -> None:
    assert "version" in PYPROJECT["project"]["dynamic"]
    assert PYPROJECT["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "ciba_middleware.__version__"}
    assert VERSION not in (ROOT / "setup.py").read_text(encoding="utf-8")
    assert metadata.version("ciba-middleware") == VERSION


def _tracked_files() -> set[str]:
    if not (ROOT / ".git").exists() or shutil.which("git") is None:
        unreachable("not a git checkout: no list of the repository's files to compare the sdist with")
    listed = ok(run(["git", "ls-files", "-z"], cwd=ROOT)).split("\0")
    # Deleted but not yet committed files are not in the tree the sdist is built from.
    return {name for name in listed if name and (ROOT / name).is_file()}


def test_the_sdist_holds_every_file_of_the_repository(dist: Dist) -> None:
    with tarfile.open(dist.sdist) as sdist:
        members = {m.name.split("/", 1)[1] for m in sdist.getmembers() if m.isfile() and "/" in m.name}
    expected = _tracked_files() - {".gitignore"}
    assert expected - members == set()
    for needed in ("tests/conftest.py", "tests/_apps.py", "tests/data/authlete-fail-api.openapi.yaml", "LICENSE"):
        assert needed in members


# -- the wheel in a clean venv ------------------------------------------------------------


@dataclass(frozen=True)
class CleanVenv:
    root: Path
    cwd: Path
    env: Mapping[str, str]

    @property
    def python(self) -> str:
        return str(self.root / "bin" / "python")

    def command(self, *argv: str, env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return run([str(self.root / "bin" / "ciba-middleware"), *argv], cwd=self.cwd, env={**self.env, **(env or {})})


GRANTS = json.dumps([{"service": SERVICE, "token_sha256": sha256_hex(SERVICE_TOKEN)}])


@pytest.fixture(scope="module")
def clean_venv(dist: Dist, tmp_path_factory: pytest.TempPathFactory) -> CleanVenv:
    """A new venv with the wheel alone (``pip install dist/*.whl``), run from an empty directory."""
    tmp = tmp_path_factory.mktemp("clean")
    venv.create(tmp / "venv", with_pip=True)
    cwd = tmp / "cwd"
    cwd.mkdir()
    # Nothing of the checkout or of the test venv leaks in: no PYTHONPATH, no user site.
    env = {"PATH": f"{tmp / 'venv' / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}", "PYTHONNOUSERSITE": "1"}
    env |= {key: os.environ[key] for key in ("HOME", "PIP_CONFIG_FILE", "PIP_INDEX_URL") if key in os.environ}
    made = CleanVenv(tmp / "venv", cwd, env)
    ok(run([made.python, "-m", "pip", "install", "-q", str(dist.wheel)], cwd=cwd, env=env))
    return made


def test_the_clean_venv_imports_the_package_and_not_the_demo(clean_venv: CleanVenv) -> None:
    out = ok(
        run(
            [clean_venv.python, "-c", "import ciba_middleware as m; print(m.__version__, m.__file__)"],
            cwd=clean_venv.cwd,
            env=clean_venv.env,
        )
    )
    version, path = out.split()
    assert version == VERSION
    assert Path(path).is_relative_to(clean_venv.root)
    demo = run([clean_venv.python, "-c", "import example_app"], cwd=clean_venv.cwd, env=clean_venv.env)
    assert demo.returncode == 1
    assert "ModuleNotFoundError: No module named 'example_app'" in demo.stderr
    installed = ok(
        run([clean_venv.python, "-m", "pip", "list", "--format=json"], cwd=clean_venv.cwd, env=clean_venv.env)
    )
    names = {p["name"].lower() for p in json.loads(installed)}
    assert "gunicorn" not in names
    assert {"ciba-middleware", "werkzeug"} <= names


def test_the_clean_venv_command_prints_its_version_and_checks(clean_venv: CleanVenv) -> None:
    assert ok(clean_venv.command("--version")) == f"ciba-middleware {VERSION}\n"
    store = f"sqlite:///{clean_venv.cwd / 'check.sqlite3'}"
    checked = clean_venv.command("check", env={"CIBA_TOKENS": GRANTS, "CIBA_STORE_URL": store})
    assert checked.returncode == 0, checked.stderr
    assert checked.stdout.startswith("ok: ")
    bad = clean_venv.command("check", env={"CIBA_TOKENS": "[", "CIBA_STORE_URL": store})
    assert bad.returncode == 2
    assert "CIBA_TOKENS" in bad.stderr


def test_the_clean_venv_help_points_at_the_manual_it_can_reach(clean_venv: CleanVenv, dist: Dist) -> None:
    """Someone with the wheel alone: ``--help`` names the page in the sdist, and the site's address."""
    pointer = " ".join(ok(clean_venv.command("--help")).split("\n\n")[-1].split())
    assert pointer == (
        "see 'ciba-middleware COMMAND --help'. The manual is docs/cli.md in the source distribution "
        f"(or a clone of the repository), and once published {DOCS_URL}cli/"
    )
    with tarfile.open(dist.sdist) as sdist:
        assert f"ciba_middleware-{VERSION}/docs/cli.md" in sdist.getnames()


def test_serve_without_the_server_extra_says_how_to_install_it(clean_venv: CleanVenv) -> None:
    result = clean_venv.command("serve", env={"CIBA_TOKENS": GRANTS})
    assert result.returncode == 2
    assert result.stderr == "ciba-middleware: error: serve needs gunicorn: pip install 'ciba-middleware[server]'\n"


@pytest.fixture(scope="module")
def served(clean_venv: CleanVenv, dist: Dist) -> Iterator[str]:
    """``ciba-middleware serve`` in the clean venv, once the ``server`` extra is installed."""
    ok(
        run(
            [clean_venv.python, "-m", "pip", "install", "-q", f"{dist.wheel}[server]"],
            cwd=clean_venv.cwd,
            env=clean_venv.env,
        )
    )
    port = free_port()
    env = {**clean_venv.env, "CIBA_TOKENS": GRANTS, "CIBA_STORE_URL": f"sqlite:///{clean_venv.cwd / 'served.sqlite3'}"}
    log = clean_venv.cwd / "serve.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [str(clean_venv.root / "bin" / "ciba-middleware"), "serve", "--port", str(port), "--graceful-timeout", "2"],
            cwd=clean_venv.cwd,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, log.read_text()
            try:
                requests.get(url, timeout=1)
                break
            except requests.ConnectionError:
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_the_clean_venv_serves_a_fail_call_under_gunicorn(served: str, clean_venv: CleanVenv) -> None:
    response = requests.post(
        served + V3_PATH,
        headers={"Authorization": f"Bearer {SERVICE_TOKEN}"},
        json={"reason": "UNKNOWN_USER_ID"},
        timeout=10,
    )
    assert response.status_code == 200
    assert response.headers["Server"].startswith("gunicorn")
    assert response.json()["resultCode"] == "A185001"
    assert response.json()["responseContent"] == '{"error":"unknown_user_id"}'
    unauthenticated = requests.post(served + V3_PATH, json={}, timeout=10)
    assert unauthenticated.status_code == 401


# -- README.md and docs/ read from a clone ------------------------------------------------

_LINK = re.compile(r"\]\(([^)\s]+)\)")
README = (ROOT / "README.md").read_text(encoding="utf-8")
#: The pages whose links must work from a clone: README.md and every page of docs/.
LINKED_PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def _anchors(page: Path) -> set[str]:
    """GitHub's heading anchors, which mkdocs.yml's slugify also makes on the site."""
    text = re.sub(r"^```.*?^```", "", page.read_text(encoding="utf-8"), flags=re.MULTILINE | re.DOTALL)
    headings = re.findall(r"^#+ (.+)$", text, re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


def _links(page: Path) -> list[str]:
    """The Markdown links of ``page``, outside its code blocks."""
    text = re.sub(r"^```.*?^```", "", page.read_text(encoding="utf-8"), flags=re.MULTILINE | re.DOTALL)
    return _LINK.findall(text)


def _check_target(page: Path, path: Path, anchor: str, link: str) -> None:
    assert path.resolve().is_relative_to(ROOT), f"{page.name}: {link} leaves the repository"
    assert path.is_file(), f"{page.name}: {link}"
    if anchor and path.suffix == ".md":
        assert anchor in _anchors(path), f"{page.name}: {link}: no such heading"


@pytest.mark.parametrize("page", LINKED_PAGES, ids=lambda page: page.name)
def test_links_resolve_inside_the_repository(page: Path) -> None:
    """Relative links (and their anchors) name files of the repository; so do links to its source.

    A relative link renders on any forge, in an editor and in the sdist; links to
    another site are the ones a reader needs the network for.
    """
    for link in _links(page):
        if link.startswith(f"{SOURCE_URL}/blob/main/"):
            path, _, anchor = link.removeprefix(f"{SOURCE_URL}/blob/main/").partition("#")
            _check_target(page, ROOT / path, anchor, link)
        elif "://" not in link and not link.startswith("mailto:"):
            path, _, anchor = link.partition("#")
            _check_target(page, page.parent / path if path else page, anchor, link)


def test_readme_links_into_the_docs_are_relative() -> None:
    """No README.md link needs the documentation site or the forge: the files of docs/ instead."""
    links = _links(ROOT / "README.md")
    assert len([link for link in links if link.startswith("docs/")]) >= 15
    assert not [link for link in links if link.startswith((DOCS_URL, SOURCE_URL))]


def test_one_documentation_address() -> None:
    site = yaml.load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"), Loader=yaml.BaseLoader)
    assert site["site_url"] == DOCS_URL
    assert cli.DOCS_URL == DOCS_URL  # the address --help shows
    assert DOCS_URL.endswith("/")
    # repo_url would make the theme ask api.github.com for the repository's facts.
    assert "repo_url" not in site
    docs_links = {link for page in LINKED_PAGES for link in _links(page)}
    assert not [link for link in docs_links if "github.com" in link and not link.startswith(SOURCE_URL)]


def readme_snippets() -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", README, re.MULTILINE | re.DOTALL)


def test_readme_python_snippets_pass_mypy_strict_outside_the_repository(tmp_path: Path) -> None:
    """Where only the installed package is found: the checkout itself is not on the path.

    With setuptools' default editable install mypy finds nothing (an import hook it cannot
    follow); ``scripts/check`` installs with ``editable_mode=strict`` for this
    (docs/getting-started.md).
    """
    snippets = readme_snippets()
    assert snippets
    # The idiom shown must be one that type-checks as it is, not one told to be quiet.
    assert not [snippet for snippet in snippets if "type: ignore" in snippet]
    for number, snippet in enumerate(snippets, 1):
        (tmp_path / f"readme_snippet_{number}.py").write_text(snippet, encoding="utf-8")
    env = {key: value for key, value in os.environ.items() if key not in {"PYTHONPATH", "MYPYPATH"}}
    result = run(
        [sys.executable, "-m", "mypy", "--strict", "--cache-dir", str(tmp_path / ".mypy_cache"), "."],
        cwd=tmp_path,
        env=env,
    )
    assert result.returncode == 0, result.stdout + result.stderr


# -- the documentation site ---------------------------------------------------------------


def build_site(tmp_path: Path, docs: Path) -> subprocess.CompletedProcess[str]:
    config = yaml.load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"), Loader=yaml.BaseLoader)
    assert config["strict"] == "true"
    text = (ROOT / "mkdocs.yml").read_text(encoding="utf-8").replace("docs_dir: docs", f"docs_dir: {docs}")
    (tmp_path / "mkdocs.yml").write_text(text, encoding="utf-8")
    return run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=tmp_path,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The site as ``mkdocs build --strict`` writes it from docs/."""
    tmp = tmp_path_factory.mktemp("site")
    ok(build_site(tmp, ROOT / "docs"))
    return tmp / "site"


def test_the_site_builds_strict_with_every_page(site: Path) -> None:
    index = (site / "index.html").read_text(encoding="utf-8")
    assert '<pre class="mermaid"><code>sequenceDiagram' in index
    for page in (ROOT / "docs").glob("*.md"):
        target = "index.html" if page.stem == "index" else f"{page.stem}/index.html"
        assert (site / target).is_file(), page.name
    assert (site / "openapi.yaml").is_file()


_LOADING_ATTRIBUTES = {
    "script": ("src",),
    "link": ("href",),
    "img": ("src", "srcset"),
    "source": ("src", "srcset"),
    "iframe": ("src",),
    "embed": ("src",),
    "object": ("data",),
}


class _Loads(html.parser.HTMLParser):
    """The addresses an HTML page loads by itself: scripts, styles, icons, pictures, frames.

    Links a reader follows (``<a href>``, ``<link rel=canonical>``) are not loads.
    """

    def __init__(self) -> None:
        super().__init__()
        self.loads: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "link" and set((values.get("rel") or "").split()) & {"canonical", "alternate", "next", "prev"}:
            return
        names = {"script": "src", "link": "href", "img": "src", "iframe": "src", "source": "src", "embed": "src"}
        for name in (
            names.get(tag),
            "srcset" if tag in {"img", "source"} else None,
            "data" if tag == "object" else None,
        ):
            if name and values.get(name):
                self.loads.append(str(values[name]))


_ELSEWHERE = re.compile(r"^(?:[a-z][a-z0-9+.-]*:)?//", re.IGNORECASE)
_CSS_LOADS = re.compile(r"""@import\s+(?:url\()?\s*['"]?([^'")\s;]+)|url\(\s*['"]?([^'")]+)""")


def test_no_page_loads_a_resource_from_another_host(site: Path) -> None:
    """What the HTML and CSS load is the site's own (data: URLs included); JavaScript is run below."""
    pages = sorted(site.rglob("*.html"))
    assert len(pages) >= len(list((ROOT / "docs").glob("*.md")))
    for page in pages:
        parser = _Loads()
        parser.feed(page.read_text(encoding="utf-8"))
        assert parser.loads, page
        assert not [url for url in parser.loads if _ELSEWHERE.match(url)], page
    for sheet in site.rglob("*.css"):
        found = [a or b for a, b in _CSS_LOADS.findall(sheet.read_text(encoding="utf-8"))]
        assert not [url for url in found if _ELSEWHERE.match(url)], sheet


def test_the_site_shows_its_diagrams_offline_in_chromium(site: Path) -> None:
    """Every page opened in Debian's chromium with every other host refused: nothing asked
    for elsewhere (fonts, Mermaid, the forge's API), and each Mermaid block drawn as an SVG."""
    if not Path(CHROMIUM).is_file():
        unreachable(f"{CHROMIUM} is not installed (scripts/apt-packages.txt)")
    handler = functools.partial(_QuietHandler, directory=str(site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}/"
    elsewhere: list[str] = []
    drawn: dict[str, tuple[int, int]] = {}
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--headless", "--no-sandbox"])
            page = browser.new_page()
            page.route("**/*", lambda route: _local_only(route, base, elsewhere))
            # The theme draws each diagram in a closed shadow root; opened here so that the
            # test can look into it.
            page.add_init_script(
                "const attach = Element.prototype.attachShadow;"
                "Element.prototype.attachShadow = function (init) {"
                "  return attach.call(this, {...init, mode: 'open'});"
                "};"
            )
            for html_page in sorted(site.rglob("*.html")):
                path = html_page.relative_to(site).as_posix()
                page.goto(base + path, wait_until="load")
                diagrams = html_page.read_text(encoding="utf-8").count('<pre class="mermaid">')
                if diagrams:
                    page.wait_for_function(
                        f"document.querySelectorAll('div.mermaid').length === {diagrams}", timeout=30000
                    )
                    page.wait_for_selector("div.mermaid svg", timeout=30000)
                    drawn[path] = (diagrams, page.locator("div.mermaid svg").count())
            browser.close()
    finally:
        server.shutdown()
        server.server_close()
    assert elsewhere == []
    assert drawn, "no page has a Mermaid diagram"
    assert {path: count for path, (count, _) in drawn.items()} == {path: svgs for path, (_, svgs) in drawn.items()}


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


def _local_only(route: Route, base: str, elsewhere: list[str]) -> None:
    if route.request.url.startswith(base):
        route.continue_()
    else:
        elsewhere.append(route.request.url)
        route.abort()


@pytest.mark.parametrize(
    ("link", "complaint"),
    [
        pytest.param("[x](api.md#no-such-heading)", "no-such-heading", id="anchor"),
        pytest.param("[x](no-such-page.md)", "no-such-page.md", id="page"),
    ],
)
def test_a_broken_link_fails_the_site_build(tmp_path: Path, link: str, complaint: str) -> None:
    docs = tmp_path / "docs"
    shutil.copytree(ROOT / "docs", docs)
    with (docs / "index.md").open("a", encoding="utf-8") as page:
        page.write(f"\n{link}\n")
    result = build_site(tmp_path, docs)
    assert result.returncode == 1
    assert complaint in result.stderr


def test_every_picture_in_docs_is_shown_by_a_page() -> None:
    """A chart or diagram committed to docs/ (the benchmarks' performance chart, say) is on a page."""
    pages = "\n".join(page.read_text(encoding="utf-8") for page in (ROOT / "docs").glob("*.md"))
    pictures = [p for p in (ROOT / "docs").rglob("*") if p.suffix.lower() in {".png", ".svg", ".jpg", ".jpeg", ".gif"}]
    for picture in pictures:
        assert f"]({picture.relative_to(ROOT / 'docs').as_posix()})" in pages, picture.name
