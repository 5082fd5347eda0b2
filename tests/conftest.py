import os
import sys

import pytest

# tests import the plain references as `import reference`
sys.path.insert(0, os.path.dirname(__file__))

from hypothesis import HealthCheck, settings  # noqa: E402

import fuzzing  # noqa: E402

# Hypothesis profiles for the fuzz tests (tests/test_fuzz.py). Each fuzz test runs
# `max_examples` examples; tests/fuzzing.py scales that per test with `examples(weight)` so
# the whole "ci" profile runs more than 10,000 examples in about two minutes on two cores.
#   ci   : the default; derandomized, so a CI failure reproduces exactly
#   long : FASTCONV_FUZZ=long, 10x the examples with fresh random seeds (100,000+)
#   tiny : FASTCONV_FUZZ=tiny, for the sanitizer run (.ci/run), where each call is ~10x slower
_COMMON = dict(deadline=None, print_blob=True,
               suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much,
                                      HealthCheck.data_too_large])
settings.register_profile("ci", max_examples=fuzzing.BASE_EXAMPLES["ci"], derandomize=True,
                          **_COMMON)
settings.register_profile("long", max_examples=fuzzing.BASE_EXAMPLES["long"], **_COMMON)
settings.register_profile("tiny", max_examples=fuzzing.BASE_EXAMPLES["tiny"], derandomize=True,
                          **_COMMON)
settings.load_profile(fuzzing.PROFILE)


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", default=False,
                     help="also run the tests marked slow (large arrays, minutes, ~20 GiB)")


def pytest_collection_modifyitems(config, items):
    # slow tests are deselected (not skipped) unless asked for: a deselected test is never
    # counted as passing
    if config.getoption("--runslow"):
        return
    kept = [item for item in items if "slow" not in item.keywords]
    deselected = [item for item in items if "slow" in item.keywords]
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = kept


def pytest_terminal_summary(terminalreporter):
    if not fuzzing.EXAMPLES:
        return
    write = terminalreporter.write_line
    total = sum(fuzzing.EXAMPLES.values())
    write(f"fastconv fuzz ({fuzzing.PROFILE} profile): {total} examples run")
    for name, count in sorted(fuzzing.EXAMPLES.items()):
        write(f"    {name:<40} {count:>7}")
