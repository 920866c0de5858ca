"""Test settings: the project's settings plus a small app of test agents for the kernel."""

from settings.config import *  # noqa: F403
from settings.config import AGENT_MODULES, INSTALLED_APPS
from settings.env import envbool

INSTALLED_APPS = [*INSTALLED_APPS, "tests.kernelapp"]
AGENT_MODULES = [*AGENT_MODULES, "tests.kernelapp.agents"]
# Fast sweeps for tests that wait on them.
AGENT_TASK_BACKOFF_BASE_SECONDS = 0.2
AGENT_TASK_BACKOFF_CAP_SECONDS = 1.0
WORKER_HEARTBEAT_SECONDS = 1
# The tests ask the simulated world for failures; a worker started with the variable off does not.
SIMULATED_FAILURES = envbool("SIMULATED_FAILURES", True)
# The scrape token the metrics tests send (tests.test_observability.scrape).
METRICS_TOKEN = "test-only-scrape-token-0123456789abcdef"
