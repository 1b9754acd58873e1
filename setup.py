"""Packaging for ciba-middleware.

Extras:
    redis     the Redis ticket store (redis-py, with hiredis to parse replies in C)
    postgres  the PostgreSQL ticket store (psycopg 3 with its pool)
    flask     the Flask integration and the demo server in ``example_app``
    demo      flask + the authlete client, for example_app with CIBA_DEMO_FAIL_VIA=http
    metrics   Prometheus metrics (prometheus_client)
    otel      OpenTelemetry spans (opentelemetry-api only; the app brings the SDK)
    test      everything the test suite needs, servers' clients included
    dev       test + the linters and type checker run by ``.ci/run``
"""

from pathlib import Path

from setuptools import find_packages, setup

EXTRAS = {
    "redis": ["redis[hiredis]>=5.0"],
    "postgres": ["psycopg[binary]>=3.1", "psycopg-pool>=3.2"],
    "flask": ["Flask>=3.0"],
    "demo": ["Flask>=3.0", "authlete>=1.3.0"],
    "metrics": ["prometheus_client>=0.17"],
    "server": ["gunicorn>=22.0"],
    "otel": ["opentelemetry-api>=1.20"],
}
EXTRAS["test"] = sorted(
    {
        *EXTRAS["redis"],
        *EXTRAS["postgres"],
        *EXTRAS["flask"],
        *EXTRAS["metrics"],
        *EXTRAS["server"],
        *EXTRAS["otel"],
        "opentelemetry-sdk>=1.20",
        "pytest>=8.0",
        "pytest-timeout>=2.2",
        "WebTest>=3.0",
        "hypothesis>=6.100",
        "schemathesis>=4.0",
        "requests>=2.31",
        "authlete==1.3.0",
        "jsonschema>=4.20",
        "openapi-spec-validator>=0.7",
        "PyYAML>=6.0",
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
        # benchmarks/: profiling the hot path
        "py-spy>=0.3",
        "pyinstrument>=4.6",
        # benchmarks/chart.py: docs/performance.png
        "matplotlib>=3.8",
    }
)

setup(
    name="ciba-middleware",
    version="0.1.0",
    description="Authlete-compatible CIBA backchannel authentication fail API as WSGI middleware",
    long_description=Path(__file__).with_name("README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.11",
    packages=find_packages(include=["ciba_middleware", "ciba_middleware.*", "example_app", "example_app.*"]),
    package_data={"ciba_middleware": ["py.typed"]},
    install_requires=["Werkzeug>=3.0", "gunicorn>=22.0"],
    extras_require=EXTRAS,
    entry_points={"console_scripts": ["ciba-middleware=ciba_middleware.cli:main"]},
    classifiers=[
        "Programming Language :: Python :: 3",
        "Programming Language :: Python :: 3.11",
        "Topic :: Internet :: WWW/HTTP :: WSGI :: Middleware",
        "Topic :: Security",
    ],
)
