"""Packaging for ciba-middleware: the extras. The rest of the metadata is in pyproject.toml.

Extras:
    redis     the Redis ticket store (redis-py, with hiredis to parse replies in C)
    postgres  the PostgreSQL ticket store (psycopg 3 with its pool)
    flask     the Flask integration
    demo      the repository's demo, ``example_app``: flask + joserfc (its ID tokens) + the
              authlete client (CIBA_DEMO_FAIL_VIA=http) + Waitress (its server)
    metrics   Prometheus metrics (prometheus_client)
    docs      the documentation site (MkDocs, Material theme)
    server    gunicorn, for ``ciba-middleware serve`` and ``ciba_middleware.wsgi:application``
    dpop      DPoP-bound service access tokens (joserfc checks the proofs' JWS)
    ciba      the rest of the CIBA API family (ciba_middleware.ciba: joserfc signs the ID tokens)
    authlete  authlete-python's AuthleteApi served in process (ciba_middleware.authlete)
    django    the Django integration (ciba_middleware.django)
    asgi      a server for the ASGI middleware (uvicorn); the middleware itself needs nothing
    otel      OpenTelemetry spans (opentelemetry-api only; the app brings the SDK)
    test      everything the test suite needs, servers' clients included
    dev       test + the linters, type checker and nox, run by ``.ci/run``

Adding an extra is one line in EXTRAS (and one here).
"""

from setuptools import setup

EXTRAS = {
    "redis": ["redis[hiredis]>=5.0"],
    "postgres": ["psycopg[binary]>=3.1", "psycopg-pool>=3.2"],
    "flask": ["Flask>=3.0"],
    "demo": ["Flask>=3.0", "joserfc>=1.0", "authlete>=1.3.0", "waitress>=2.1"],
    "metrics": ["prometheus_client>=0.17"],
    "docs": ["mkdocs>=1.6", "mkdocs-material>=9.5"],
    "server": ["gunicorn>=22.0"],
    "dpop": ["joserfc>=1.8"],
    "ciba": ["joserfc>=1.8"],
    "authlete": ["authlete>=1.3.0"],
    "django": ["Django>=4.2"],
    "asgi": ["uvicorn>=0.30"],
    "otel": ["opentelemetry-api>=1.20"],
}
EXTRAS["test"] = sorted(
    {
        *EXTRAS["redis"],
        *EXTRAS["postgres"],
        *EXTRAS["flask"],
        *EXTRAS["metrics"],
        *EXTRAS["server"],
        *EXTRAS["dpop"],
        *EXTRAS["ciba"],
        *EXTRAS["django"],
        *EXTRAS["asgi"],
        # the ASGI middleware under Starlette and FastAPI (forms: python-multipart)
        "starlette>=0.37",
        "fastapi>=0.110",
        "python-multipart>=0.0.9",
        "httptools>=0.6",
        "hypercorn>=0.16",
        *EXTRAS["otel"],
        "opentelemetry-sdk>=1.20",
        # <9.2: pytest-xdist 3.8's --dist loadgroup (tests/conftest.py's XDIST_GROUPS) does
        # nothing under 9.2's node IDs (pytest-xdist issue 1386); lift once xdist handles them.
        "pytest>=8.0,<9.2",
        "pytest-timeout>=2.2",
        "pytest-xdist>=3.5",  # the suite on several workers (tests/conftest.py, docs/development.md)
        "WebTest>=3.0",
        # tests/test_packaging.py: the artefacts, README's snippets, the documentation site
        *EXTRAS["docs"],
        "build>=1.2",
        "twine>=6.1",
        "check-wheel-contents>=0.6",
        "mypy>=1.10",
        "waitress>=2.1",  # a WSGI server other than gunicorn, for tests/test_reload.py
        "hypothesis>=6.100",
        "schemathesis>=4.0",
        "requests>=2.31",
        "authlete==1.3.0",
        "jsonschema>=4.20",
        "openapi-spec-validator>=0.7",
        "PyYAML>=6.0",
        # example_app: its ID tokens, and its device page in Debian's chromium
        "joserfc>=1.0",
        "playwright>=1.40",
        # tests/test_server_output.py: the audit line under uWSGI (built from source)
        "uwsgi>=2.0",
    }
)
EXTRAS["dev"] = sorted(
    {
        *EXTRAS["test"],
        "ruff>=0.6",
        "mypy>=1.10",
        "types-PyYAML",
        "types-requests",
        "django-stubs>=4.2",
        # benchmarks/: profiling the hot path
        "py-spy>=0.3",
        "pyinstrument>=4.6",
        # scripts/check: the suite on every supported Python
        "nox>=2024.3",
        # benchmarks/chart.py: docs/performance.png
        "matplotlib>=3.8",
    }
)

setup(extras_require=EXTRAS)
