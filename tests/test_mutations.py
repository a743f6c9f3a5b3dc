"""The mutation check (``python -m tests.mutations``) stays usable: every mutation still applies, and one runs.

The full check (24 mutations, minutes on 2 cores) is a script run by hand; CI runs one mutation end to end.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.mutations import MUTATIONS, ROOT


@pytest.mark.parametrize("mutation", MUTATIONS, ids=lambda m: m.name)
def test_mutation_applies_to_the_current_code(mutation):
    assert (ROOT / mutation.path).read_text().count(mutation.old) == 1
    assert all((ROOT / test.split("::")[0]).is_file() for test in mutation.tests)


@pytest.mark.slow
def test_mutation_check_catches_the_advantage_sign_flip():
    command = [sys.executable, "-m", "tests.mutations", "advantage sign flipped before the update"]
    proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0 and "kill rate: 1/1 (100%)" in proc.stdout, proc.stdout + proc.stderr[-3000:]
