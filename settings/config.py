"""Django settings, read from the environment through settings.env.

DJANGO_ENV=production turns on production mode: every required variable must be
set and well formed, or start-up stops with an error that names it. Otherwise
(development, the default) missing DATABASE_URL/REDIS_URL start the project's own
local servers under .run/ (see devservers).
"""

from __future__ import annotations

import ssl
from datetime import timedelta
from pathlib import Path

import dj_database_url

from settings.env import (
    ConfigurationError,
    envbool,
    envfloat,
    envint,
    envjson,
    envlist,
    envstr,
    envurl,
)

BASE_DIR = Path(__file__).resolve().parent.parent

DJANGO_ENV = envstr("DJANGO_ENV", "development")
if DJANGO_ENV not in {"development", "production"}:
    raise ConfigurationError(f"DJANGO_ENV must be 'development' or 'production', not {DJANGO_ENV!r}")
PRODUCTION = DJANGO_ENV == "production"

if PRODUCTION:
    SECRET_KEY = envstr("SECRET_KEY")
    if len(SECRET_KEY) < 50 or len(set(SECRET_KEY)) < 5:
        raise ConfigurationError("SECRET_KEY must be at least 50 characters with at least 5 distinct ones")
    DEBUG = envbool("DEBUG", False)
    if DEBUG:
        # Django's debug page shows settings, the environment and every frame's variables.
        raise ConfigurationError("DEBUG must be off in production (unset it, or set DEBUG=false)")
    ALLOWED_HOSTS = envlist("ALLOWED_HOSTS", [])
    if not ALLOWED_HOSTS:
        raise ConfigurationError("ALLOWED_HOSTS is required in production (comma-separated host names)")
    DATABASE_URL = envurl("DATABASE_URL", {"postgres", "postgresql"})
    REDIS_URL = envurl("REDIS_URL", {"redis", "rediss", "unix"})
else:
    SECRET_KEY = envstr("SECRET_KEY", "development-only-key-not-for-production-use-0123456789")
    DEBUG = envbool("DEBUG", True)
    ALLOWED_HOSTS = envlist("ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]", "testserver"])
    from devservers.stack import ensure_database_url, ensure_redis_url

    DATABASE_URL = envurl("DATABASE_URL", {"postgres", "postgresql"}, "") or ensure_database_url()
    REDIS_URL = envurl("REDIS_URL", {"redis", "rediss", "unix"}, "") or ensure_redis_url()

INSTALLED_APPS = [
    "orchestration.apps.OperatorsAdminConfig",  # django.contrib.admin with the operators' site
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_celery_beat",
    "ninja",  # /api/docs serves its bundled Swagger UI from static files, not from a CDN
    "axes",  # admin login throttling
    "adminkit",
    "orchestration.apps.OrchestrationConfig",
    "orders",
    "agents",
    "agents.outside",
    "operations",
    "loadlab",
    "api",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "orchestration.observability.requests.CorrelationIdMiddleware",
    "axes.middleware.AxesMiddleware",  # last, as django-axes asks: turns a lockout into its 429 page
]

ROOT_URLCONF = "settings.urls"
WSGI_APPLICATION = "settings.wsgi.application"
ASGI_APPLICATION = "settings.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {
    "default": dj_database_url.parse(
        DATABASE_URL,
        conn_max_age=envint("DATABASE_CONN_MAX_AGE", 60, minimum=0),
        conn_health_checks=True,
    )
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# django-axes first: a locked-out username+address pair is refused before its password is checked.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]  # one attacker cannot lock an operator out everywhere
AXES_FAILURE_LIMIT = envint("ADMIN_LOGIN_FAILURE_LIMIT", 5, minimum=1)
AXES_COOLOFF_TIME = timedelta(seconds=envint("ADMIN_LOGIN_COOLOFF_SECONDS", 15 * 60, minimum=1))
AXES_RESET_ON_SUCCESS = True

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"

# Security: strict in production, each switch overridable for a deployment behind
# a TLS-terminating proxy. `manage.py check --deploy` is clean with the defaults.
SECURE_SSL_REDIRECT = envbool("SECURE_SSL_REDIRECT", PRODUCTION)
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https") if envbool("BEHIND_TLS_PROXY", False) else None
SESSION_COOKIE_SECURE = PRODUCTION
CSRF_COOKIE_SECURE = PRODUCTION
SECURE_HSTS_SECONDS = envint("SECURE_HSTS_SECONDS", 31536000 if PRODUCTION else 0, minimum=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = PRODUCTION
SECURE_HSTS_PRELOAD = PRODUCTION
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"
# The debug page hides passwords in URLs (DATABASE_URL, REDIS_URL, CELERY_BROKER_URL, in
# settings, the environment and frame variables) and anything named like a credential.
DEFAULT_EXCEPTION_REPORTER_FILTER = "settings.reporting.SecretsHiddenFilter"

# ---------------------------------------------------------------------------
# Celery. Messages are wake-up hints; the database decides what runs.
# ---------------------------------------------------------------------------

# A claim holds a lease; a handler that heartbeats keeps it (and its guard slots and time
# limit) for as long as it heartbeats. The kernel's own deadline stops a handler a lease after
# its last heartbeat (orchestration.work.deadline); Celery's hard limit is only the backstop ceiling
# on one attempt, so a frozen pool process is still killed.
AGENT_TASK_DEFAULT_LEASE_SECONDS = envint("AGENT_TASK_DEFAULT_LEASE_SECONDS", 60, minimum=5)
AGENT_TASK_MAX_LEASE_SECONDS = envint("AGENT_TASK_MAX_LEASE_SECONDS", 600, minimum=5)
AGENT_TASK_MAX_RUNTIME_SECONDS = envint("AGENT_TASK_MAX_RUNTIME_SECONDS", 1800, minimum=5)
CELERY_HARD_LIMIT_GRACE_SECONDS = 30
# The rest of the kernel's knobs (orchestration.conf reads them; each default lives here only).
AGENT_TASK_MAX_ATTEMPTS = envint("AGENT_TASK_MAX_ATTEMPTS", 5, minimum=1)
AGENT_TASK_BACKOFF_BASE_SECONDS = envfloat("AGENT_TASK_BACKOFF_BASE_SECONDS", 1.0, minimum=0)
AGENT_TASK_BACKOFF_CAP_SECONDS = envfloat("AGENT_TASK_BACKOFF_CAP_SECONDS", 300.0, minimum=0)
AGENT_TASK_REPUBLISH_AFTER_SECONDS = envint("AGENT_TASK_REPUBLISH_AFTER_SECONDS", 30, minimum=1)
AGENT_TASK_SWEEP_BATCH_SIZE = envint("AGENT_TASK_SWEEP_BATCH_SIZE", 500, minimum=1)
AGENT_TASK_RETENTION_DAYS = envint("AGENT_TASK_RETENTION_DAYS", 7, minimum=1)
AGENT_TASK_DEAD_RETENTION_DAYS = envint("AGENT_TASK_DEAD_RETENTION_DAYS", 30, minimum=1)
WORKER_HEARTBEAT_SECONDS = envint("WORKER_HEARTBEAT_SECONDS", 10, minimum=1)
WORKER_GONE_AFTER_SECONDS = envint("WORKER_GONE_AFTER_SECONDS", 60, minimum=1)
# A wake-up makes a worker process drain: it claims this many ready tasks at a time and runs
# them, for at most this long, then hands over (orchestration.work.runner.drain).
AGENT_TASK_CLAIM_BATCH = envint("AGENT_TASK_CLAIM_BATCH", 8, minimum=1)
AGENT_TASK_DRAIN_SECONDS = envfloat("AGENT_TASK_DRAIN_SECONDS", 10.0, minimum=0.1)
# Of the tasks one completion creates, a draining process keeps up to this many of the agents
# it serves and runs them next, unannounced (eager follow-ups); 0 announces every task.
# Keeping them all beat keeping one (and announcing the rest to idle processes): a wake-up
# costs more than the parallelism it buys (BENCHMARKS.md, "Eager follow-ups").
AGENT_TASK_EAGER_FOLLOW_UPS = envint("AGENT_TASK_EAGER_FOLLOW_UPS", 8, minimum=0)
# While a wake-up waits in a queue, new work sends none; the mark that says so expires after
# this long, in case its message was lost (the re-publish sweep also finds such work).
AGENT_TASK_WAKEUP_TTL_SECONDS = envint("AGENT_TASK_WAKEUP_TTL_SECONDS", 30, minimum=1)

# PostgreSQL session timeouts on every connection, whatever server DATABASE_URL names (libpq's
# startup "options": no extra round trip). Derived from the default lease L so they agree with
# it; 0 leaves one to the server (or the database role). With L = 60 s:
# - idle_in_transaction_session_timeout = L/2 = 30 s. A worker frozen inside a transaction (GC
#   pause, SIGSTOP, network cut) loses its session, and with it its row locks, before its lease
#   can even be reclaimed (L, plus up to one 5 s sweep): the next attempt does not queue behind
#   it, and the frozen one's late completion finds its session gone and its claim fenced. A
#   handler idle in its transaction for longer (a slow outside call) heartbeats, which resets
#   the session's idle clock, or waits inside context.keeping_alive().
# - statement_timeout = L/2 = 30 s: no single statement outlives the lease either. `migrate`
#   lifts it for its own session (an index build on a big table takes longer), and so does the
#   bench's bulk fill.
# - lock_timeout = L/6 = 10 s, below statement_timeout so a lock wait ends as a lock timeout (a
#   retryable error). A waiter behind a frozen holder gives up and comes back with backoff;
#   three waits (3 x L/6 = L/2) outlast the idle timeout that frees the holder's locks, so its
#   third attempt gets through, well within the default five.
DATABASE_LOCK_TIMEOUT_SECONDS = envint(
    "DATABASE_LOCK_TIMEOUT_SECONDS", max(1, AGENT_TASK_DEFAULT_LEASE_SECONDS // 6), minimum=0
)
DATABASE_STATEMENT_TIMEOUT_SECONDS = envint(
    "DATABASE_STATEMENT_TIMEOUT_SECONDS", AGENT_TASK_DEFAULT_LEASE_SECONDS // 2, minimum=0
)
DATABASE_IDLE_IN_TRANSACTION_TIMEOUT_SECONDS = envint(
    "DATABASE_IDLE_IN_TRANSACTION_TIMEOUT_SECONDS", AGENT_TASK_DEFAULT_LEASE_SECONDS // 2, minimum=0
)
_session_timeouts = {
    "lock_timeout": DATABASE_LOCK_TIMEOUT_SECONDS,
    "statement_timeout": DATABASE_STATEMENT_TIMEOUT_SECONDS,
    "idle_in_transaction_session_timeout": DATABASE_IDLE_IN_TRANSACTION_TIMEOUT_SECONDS,
}
_database_options = DATABASES["default"].setdefault("OPTIONS", {})
# Parameters bound by the server, not quoted into the SQL by psycopg in Python: the kernel's
# statements carry arrays (a batch's ids, an outbox's rows), and quoting them element by
# element cost a fifth of a worker's CPU. Bound parameters also let psycopg prepare the
# statements a worker repeats (after DATABASE_PREPARE_THRESHOLD runs), so PostgreSQL plans
# each of them once per connection. 0 turns preparing off (for a transaction-mode pooler that
# cannot keep prepared statements).
_database_options.setdefault("server_side_binding", True)
DATABASE_PREPARE_THRESHOLD = envint("DATABASE_PREPARE_THRESHOLD", 5, minimum=0)
_database_options.setdefault("prepare_threshold", DATABASE_PREPARE_THRESHOLD or None)
# Ours first: an "options" given in DATABASE_URL's query string comes later and wins.
_database_options["options"] = " ".join(
    [
        *(f"-c {name}={seconds * 1000}" for name, seconds in _session_timeouts.items() if seconds),
        _database_options.get("options", ""),
    ]
).strip()

# A pool of database connections per process (psycopg_pool through Django), for workers that
# run many tasks at once on threads: their outside calls give the connection back while they
# wait (TaskContext.outside), so connections are sized by this, not by calls in flight.
# 0: no pool, one connection per thread kept DATABASE_CONN_MAX_AGE seconds (the default).
DATABASE_POOL_SIZE = envint("DATABASE_POOL_SIZE", 0, minimum=0)
if DATABASE_POOL_SIZE:
    DATABASES["default"]["CONN_MAX_AGE"] = 0  # Django's pool hands connections back at close
    _database_options["pool"] = {"min_size": 1, "max_size": DATABASE_POOL_SIZE, "timeout": 30}

CELERY_BROKER_URL = REDIS_URL
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# A worker whose processes are all busy (draining) takes no message it cannot start: a wake-up
# left in Redis goes to an idle worker instead of waiting out a busy one's drain.
CELERY_WORKER_DISABLE_PREFETCH = True
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_RESULT_SERIALIZER = "json"
CELERY_TASK_IGNORE_RESULT = True
CELERY_RESULT_BACKEND = None
# No soft limit: the kernel's deadline stops a handler that stopped heartbeating, on every pool.
# The hard limit kills a prefork pool process still running past the ceiling (frozen, or stuck
# in C code a signal cannot interrupt).
# A wake-up drains for AGENT_TASK_DRAIN_SECONDS, then finishes the task it is running.
CELERY_TASK_TIME_LIMIT = int(
    AGENT_TASK_MAX_RUNTIME_SECONDS + AGENT_TASK_DRAIN_SECONDS + CELERY_HARD_LIMIT_GRACE_SECONDS
)
CELERY_BROKER_TRANSPORT_OPTIONS = {
    # Above the longest time limit, or Redis hands a running task to a second worker.
    "visibility_timeout": max(3600, 2 * CELERY_TASK_TIME_LIMIT),
    "socket_timeout": 10,
    "socket_connect_timeout": 5,
    "retry_on_timeout": True,
}
# A malformed message never takes a worker down: kombu's Redis transport with a screen for
# bytes it cannot read, and Celery's consumer keeping each refusal as a dead letter (the
# app's task class adds the shape check: settings/celery.py). See orchestration/poison.py.
CELERY_BROKER_TRANSPORT = "orchestration.broker.transport:Transport"
CELERY_WORKER_CONSUMER = "orchestration.broker.consumer:Consumer"
if REDIS_URL.startswith("rediss://"):
    # Named explicitly, the transport no longer gets TLS from kombu's "rediss" alias: ask for
    # it here, and verify the server's certificate (kombu's default would not).
    CELERY_BROKER_USE_SSL = {"ssl_cert_reqs": ssl.CERT_REQUIRED}
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_WORKER_CANCEL_LONG_RUNNING_TASKS_ON_CONNECTION_LOSS = True
CELERY_WORKER_SOFT_SHUTDOWN_TIMEOUT = envfloat("CELERY_WORKER_SOFT_SHUTDOWN_TIMEOUT", 30.0)
CELERY_WORKER_ENABLE_SOFT_SHUTDOWN_ON_IDLE = True
CELERY_TASK_DEFAULT_QUEUE = "orchestration"
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
# Flower's live view of tasks comes from these events: one message per state of each Celery
# task (sent, received, started, succeeded). A Celery task here is a wake-up that drains many
# agent tasks, so they cost a few messages per batch, not per agent task; turning them off
# leaves Flower its worker list (heartbeats) and loses its task pages (BENCHMARKS.md).
CELERY_WORKER_SEND_TASK_EVENTS = envbool("CELERY_TASK_EVENTS", True)
CELERY_TASK_SEND_SENT_EVENT = CELERY_WORKER_SEND_TASK_EVENTS
# Celery's Django fixup closes the database connections before and after every task unless
# told to reuse them: each wake-up would pay for a new connection and its authentication. The
# kernel's task_prerun hook drops a connection that is broken or older than
# DATABASE_CONN_MAX_AGE instead (Django's close_old_connections, as a web request does).
CELERY_DB_REUSE_MAX = 1_000_000
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
CELERY_TIMEZONE = TIME_ZONE

# Flower: basic auth from the environment, on loopback unless told otherwise.
FLOWER_BASIC_AUTH = envstr("FLOWER_BASIC_AUTH", "")

# Log lines carry the correlation id (and, in agent work, the agent, task id and attempt):
# JSON objects one per line in production, readable lines otherwise (orchestration.observability.logcontext).
LOG_FORMAT = envstr("LOG_FORMAT", "json" if PRODUCTION else "text")
if LOG_FORMAT not in {"json", "text"}:
    raise ConfigurationError(f"LOG_FORMAT must be 'json' or 'text', not {LOG_FORMAT!r}")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"log_context": {"()": "orchestration.observability.logcontext.ContextFilter"}},
    "formatters": {
        "text": {"()": "orchestration.observability.logcontext.ReadableFormatter"},
        "json": {"()": "orchestration.observability.logcontext.JsonFormatter"},
    },
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": LOG_FORMAT, "filters": ["log_context"]},
    },
    "root": {"handlers": ["console"], "level": envstr("LOG_LEVEL", "INFO")},
    "loggers": {
        "django.db.backends": {"level": "INFO"},
        "axes": {"level": "WARNING"},  # failed logins and lockouts, not every successful login
    },
}

# Modules that register agent definitions and routes with the kernel (orchestration
# imports them by path, so it never names the domain).
AGENT_MODULES = ["agents.routes"]
EXTRA_PERIODIC_JOBS = [
    ("agents.expire_reservations", 5, 5, "orchestration"),
    ("agents.expire_reviews", 5, 5, "orchestration"),
]

# The order workflow.
RESERVATION_TTL_SECONDS = envint("RESERVATION_TTL_SECONDS", 15 * 60, minimum=1)
ORDER_MAX_LINES = envint("ORDER_MAX_LINES", 20, minimum=1)
ORDER_MAX_QUANTITY = envint("ORDER_MAX_QUANTITY", 100, minimum=1)
# The simulated outside world's failures on demand (agents.outside.world): tags in a customer's
# address (+crash, +decline, ...) and the latency and failure rates set in Redis by configure().
# For tests, the demo and the load runs only: with it on, any API caller can kill a worker.
SIMULATED_FAILURES = envbool("SIMULATED_FAILURES", False)
if PRODUCTION and SIMULATED_FAILURES:
    raise ConfigurationError("SIMULATED_FAILURES must be off in production: it lets callers choose failures")

# The risk-review agent (agents/risk.py, docs/models.md): a language model screens the orders
# the rule below picks, before payment. Its verdict sends an order on to payment, cancels it,
# or sends it to an operator, who has RISK_REVIEW_SECONDS to decide (then it is cancelled).
RISK_SCREENING = envbool("RISK_SCREENING", True)
# The rule: orders whose total is above this amount, and (when on, at one more statement per
# order) customers with no completed order yet.
RISK_SCREEN_ABOVE = envfloat("RISK_SCREEN_ABOVE", 1000.0, minimum=0)
RISK_SCREEN_NEW_CUSTOMERS = envbool("RISK_SCREEN_NEW_CUSTOMERS", False)
RISK_REVIEW_SECONDS = envint("RISK_REVIEW_SECONDS", 3600, minimum=1)
# The model: any OpenAI-compatible chat-completions endpoint (hosted, vLLM, Ollama, llama.cpp).
# Unset, every process that asks runs the simulated one (agents/outside/model_server.py).
MODEL_BASE_URL = envurl("MODEL_BASE_URL", {"http", "https"}, "")
MODEL_API_KEY = envstr("MODEL_API_KEY", "")
if PRODUCTION and RISK_SCREENING and not MODEL_BASE_URL:
    raise ConfigurationError(
        "MODEL_BASE_URL is required in production while RISK_SCREENING is on (or set RISK_SCREENING=false)"
    )
if MODEL_BASE_URL:
    MODEL_NAME = envstr("MODEL_NAME")  # a real endpoint serves the models it has: name one
    MODEL_FALLBACK_NAME = envstr("MODEL_FALLBACK_NAME", "none")
else:
    MODEL_NAME = envstr("MODEL_NAME", "sim-large")
    MODEL_FALLBACK_NAME = envstr("MODEL_FALLBACK_NAME", "sim-small")
# "none": no fallback model; the deterministic rule comes right after the primary.
MODELS = [MODEL_NAME] + ([] if MODEL_FALLBACK_NAME == "none" else [MODEL_FALLBACK_NAME])
# Price per million tokens, prompt and completion, in the unit of WORKFLOW_MAX_MONEY. Every model
# named above needs one (0 for a model that costs nothing), so the money cap means something.
MODEL_PRICES = envjson(
    "MODEL_PRICES",
    {"sim-large": {"prompt": 2.5, "completion": 10.0}, "sim-small": {"prompt": 0.15, "completion": 0.6}},
)
for _model in MODELS:
    _price = MODEL_PRICES.get(_model) if isinstance(MODEL_PRICES, dict) else None
    if not (
        isinstance(_price, dict)
        and set(_price) == {"prompt", "completion"}
        and all(isinstance(value, int | float) and value >= 0 for value in _price.values())
    ):
        raise ConfigurationError(
            f"MODEL_PRICES must give model {_model!r} a price per million tokens: "
            '{"' + _model + '": {"prompt": 0.15, "completion": 0.6}}'
        )
# One call is cut by the client after this long, below the lease (a hung call ends before a claim
# could pass without a heartbeat); a model is asked at most MODEL_MAX_ASKS times per order (an
# answer that is malformed, off the schema or wrong about the order is asked again), and the
# whole chain must fit in one attempt's ceiling.
MODEL_TIMEOUT_SECONDS = envfloat("MODEL_TIMEOUT_SECONDS", AGENT_TASK_DEFAULT_LEASE_SECONDS / 2, minimum=0.1)
MODEL_MAX_ASKS = envint("MODEL_MAX_ASKS", 2, minimum=1)
if MODEL_TIMEOUT_SECONDS >= AGENT_TASK_DEFAULT_LEASE_SECONDS:
    raise ConfigurationError(
        f"MODEL_TIMEOUT_SECONDS ({MODEL_TIMEOUT_SECONDS:g}) must be below "
        f"AGENT_TASK_DEFAULT_LEASE_SECONDS ({AGENT_TASK_DEFAULT_LEASE_SECONDS})"
    )
if MODEL_TIMEOUT_SECONDS * MODEL_MAX_ASKS * len(MODELS) >= AGENT_TASK_MAX_RUNTIME_SECONDS:
    raise ConfigurationError(
        f"MODEL_TIMEOUT_SECONDS x MODEL_MAX_ASKS x {len(MODELS)} models must fit in "
        f"AGENT_TASK_MAX_RUNTIME_SECONDS ({AGENT_TASK_MAX_RUNTIME_SECONDS})"
    )

# Guards, shared by the fleet (state in Redis). GUARD_LIMITS (JSON) replaces the defaults:
# {"breakers": {dep: {failures, failure_rate, window_seconds, cooldown_seconds, successes}},
#  "concurrency": {"agent:<name>" | "dependency:<name>": slots},
#  "rates": {dep: [calls per second, burst]}}
GUARD_LIMITS = envjson(
    "GUARD_LIMITS",
    {
        "breakers": {
            "gateway": {
                "failures": 20,
                "failure_rate": 0.5,
                "window_seconds": 30,
                "cooldown_seconds": 10,
                "successes": 2,
            },
            "carrier": {
                "failures": 20,
                "failure_rate": 0.5,
                "window_seconds": 30,
                "cooldown_seconds": 10,
                "successes": 2,
            },
            "provider": {
                "failures": 20,
                "failure_rate": 0.5,
                "window_seconds": 30,
                "cooldown_seconds": 10,
                "successes": 2,
            },
        },
        "concurrency": {"dependency:gateway": 16, "dependency:carrier": 16},
        "rates": {},
    },
)
if not isinstance(GUARD_LIMITS, dict) or set(GUARD_LIMITS) - {"breakers", "concurrency", "rates"}:
    raise ConfigurationError("GUARD_LIMITS must be a JSON object with keys breakers, concurrency, rates")
WORKFLOW_MAX_STEPS = envint("WORKFLOW_MAX_STEPS", 50, minimum=1)
WORKFLOW_MAX_COST = envfloat("WORKFLOW_MAX_COST", 100.0)
# What one workflow may spend on metered services (language models): tokens billed, and their
# price in money (the unit of the prices in MODEL_PRICES).
WORKFLOW_MAX_TOKENS = envint("WORKFLOW_MAX_TOKENS", 200_000, minimum=1)
WORKFLOW_MAX_MONEY = envfloat("WORKFLOW_MAX_MONEY", 5.0, minimum=0)
BACKPRESSURE_MAX_PENDING = envint("BACKPRESSURE_MAX_PENDING", 5000, minimum=1)
# The HTTP API refuses larger request bodies with 413.
API_MAX_BODY_BYTES = envint("API_MAX_BODY_BYTES", 64 * 1024, minimum=1024)
# Fair use, per API client: a token bucket of requests (0 per second turns it off), and a cap
# on its orders that have not reached a terminal state. Both answer 429.
API_RATE_PER_SECOND = envfloat("API_RATE_PER_SECOND", 20.0, minimum=0)
API_RATE_BURST = envint("API_RATE_BURST", 100, minimum=1)
API_MAX_UNFINISHED_ORDERS = envint("API_MAX_UNFINISHED_ORDERS", 1000, minimum=1)

# Observability. Workers and the web process on one machine share PROMETHEUS_MULTIPROC_DIR
# (empty it at each deploy) so /metrics adds up every process's counters.
PROMETHEUS_MULTIPROC_DIR = envstr("PROMETHEUS_MULTIPROC_DIR", "")
if PROMETHEUS_MULTIPROC_DIR:
    Path(PROMETHEUS_MULTIPROC_DIR).mkdir(parents=True, exist_ok=True)
METRICS_COLLECTORS = ["operations.metrics.OrderCollector"]  # the domain's numbers, by path
# Who may scrape /metrics: `Authorization: Bearer <METRICS_TOKEN>`, staff with the view
# permission on agent tasks, and loopback clients only when METRICS_ALLOW_LOOPBACK is on.
METRICS_TOKEN = envstr("METRICS_TOKEN", "")
if METRICS_TOKEN and len(METRICS_TOKEN) < 32:
    raise ConfigurationError("METRICS_TOKEN must be at least 32 characters (e.g. `openssl rand -hex 32`)")
METRICS_ALLOW_LOOPBACK = envbool("METRICS_ALLOW_LOOPBACK", False)
# The operators' admin: the dashboard (kernel and domain figures) and what else a search
# of the agent tasks may name (an order id or key), both by path so the kernel names no domain.
OPERATIONS_DASHBOARD = "operations.dashboard.dashboard_view"
TASK_SEARCH_RESOLVERS = ["operations.admin.order_workflows"]
STUCK_ORDER_AFTER_SECONDS = envint("STUCK_ORDER_AFTER_SECONDS", 300, minimum=1)
STUCK_TASK_ATTEMPTS = envint("STUCK_TASK_ATTEMPTS", 3, minimum=1)

# OpenTelemetry export of task attempts, off unless set (orchestration.observability.otel).
OTEL_EXPORTER_OTLP_ENDPOINT = envstr("OTEL_EXPORTER_OTLP_ENDPOINT", "") or envstr(
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", ""
)
