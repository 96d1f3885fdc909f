"""Shared pytest setup: every tests/fixtures_*.py module is loaded as a plugin."""

import pathlib
import sys

TESTS_DIR = pathlib.Path(__file__).resolve().parent
REPO_ROOT = TESTS_DIR.parent
sys.path.insert(0, str(REPO_ROOT / "hooks"))
sys.path.insert(0, str(TESTS_DIR))

pytest_plugins = sorted(p.stem for p in TESTS_DIR.glob("fixtures_*.py"))
