"""The command-line options loadtest, chaos and bench share, and the LoadSpec they make."""

from __future__ import annotations

from pathlib import Path

from django.core.management.base import CommandError

from loadlab import loadtest, workload


def add_load_arguments(parser, orders: int = 1000) -> None:
    """The options loadtest, chaos and bench share."""
    parser.add_argument("--orders", type=int, default=orders)
    pace = parser.add_mutually_exclusive_group()
    pace.add_argument("--rate", type=float, help="arrival rate, orders per second (default: as fast as possible)")
    pace.add_argument("--concurrency", type=int, help="at most this many orders in flight")
    parser.add_argument(
        "--place-first",
        action="store_true",
        help="place every order before any worker starts, so all of them are in flight at once",
    )
    parser.add_argument("--ramp-up", type=float, default=0, help="seconds to grow to the rate or concurrency")
    parser.add_argument("--duration", type=float, help="stop placing orders after this many seconds")
    parser.add_argument("--products", type=int, default=8, help="catalogue size")
    parser.add_argument("--scarce", type=int, default=2, help="products that run out during the run")
    parser.add_argument("--latency-ms", type=float, default=0, help="latency of every outside call")
    parser.add_argument("--transient-rate", type=float, default=0.02, help="outside calls failing, nothing done")
    parser.add_argument("--timeout-rate", type=float, default=0, help="outside calls timing out after taking effect")
    parser.add_argument("--refusal-rate", type=float, default=0, help="charges declined and parcels refused")
    parser.add_argument(
        "--pay-timeouts",
        type=float,
        default=0,
        help="share of customers whose every charge takes the money, then times out (the workflow must refund)",
    )
    parser.add_argument(
        "--ship-timeouts",
        type=float,
        default=0,
        help="share of customers whose every parcel booking is taken, then times out (the workflow must void it)",
    )
    parser.add_argument("--workers", type=int, default=2, help="agent worker processes (prefork)")
    parser.add_argument("--worker-concurrency", type=int, default=2, help="pool size of each agent worker")
    parser.add_argument(
        "--slow-pool",
        choices=["threads", "prefork"],
        default="",
        help="run the agents that call the outside world on one worker with this pool",
    )
    parser.add_argument("--slow-concurrency", type=int, default=50, help="pool size of that worker")
    parser.add_argument(
        "--slow-connections",
        type=int,
        default=20,
        help="database connections its threads share (DATABASE_POOL_SIZE, at most the pool size)",
    )
    parser.add_argument("--dependency-slots", type=int, help="concurrent calls allowed per outside dependency")
    parser.add_argument("--lease-seconds", type=int, help="default lease of a claim in the workers")
    parser.add_argument(
        "--screen-above",
        type=float,
        help="orders above this total are screened by the risk model (default: the RISK_SCREEN_ABOVE setting)",
    )
    parser.add_argument("--model-latency-ms", type=float, default=0, help="latency of the simulated model")
    parser.add_argument("--timeout", type=float, default=900, help="seconds to wait for every order to finish")
    parser.add_argument("--report", type=Path, help="HTML report path (default artifacts/<run>.html)")


def spec_from(options: dict, **overrides) -> loadtest.LoadSpec:
    fields = dict(
        orders=options["orders"],
        rate=options["rate"],
        concurrency=options["concurrency"],
        ramp_up=options["ramp_up"],
        duration=options["duration"],
        products=options["products"],
        scarce=options["scarce"],
        latency_ms=options["latency_ms"],
        transient_rate=options["transient_rate"],
        timeout_rate=options["timeout_rate"],
        refusal_rate=options["refusal_rate"],
        workers=options["workers"],
        worker_concurrency=options["worker_concurrency"],
        slow_pool=options["slow_pool"],
        slow_concurrency=options["slow_concurrency"],
        slow_connections=options["slow_connections"],
        dependency_slots=options["dependency_slots"],
        lease_seconds=options["lease_seconds"],
        screen_above=options["screen_above"],
        model_latency_ms=options["model_latency_ms"],
        timeout=options["timeout"],
        place_first=options["place_first"],
    )
    for name in ("pay_timeouts", "ship_timeouts"):
        if not 0 <= options[name] <= 1:
            raise CommandError(f"{name.replace('_', '-')} must be between 0 and 1, not {options[name]}")
    try:
        fields["mix"] = workload.Mix(paytimeout=options["pay_timeouts"], shiptimeout=options["ship_timeouts"])
        return loadtest.LoadSpec(**(fields | overrides))
    except ValueError as error:
        raise CommandError(str(error)) from None


def report_path(options: dict, run: str) -> Path:
    return options["report"] or Path("artifacts") / f"{run}.html"
