"""A load run's figures: a summary for the terminal, and one self-contained HTML file with plots."""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display: the plots go into the HTML file

import matplotlib.pyplot as plt

from loadlab.loadtest import LoadResult

MiB = 1024 * 1024


def summary_lines(result: LoadResult) -> list[str]:
    figures, counts, spec = result.figures, result.counts, result.spec
    lines = ["", "final states:"]
    for state, count in sorted(figures.by_state.items(), key=lambda item: -item[1]):
        lines.append(f"  {state:<20} {count:>6}")
    lines += [
        "",
        f"orders placed      {result.placed} of {spec.orders}",
        f"throughput         {figures.throughput:.1f} orders/s over {result.seconds:.1f} s",
        f"success rate       {100 * result.success_rate:.1f}% completed "
        "(the rest declined, out of stock or refused by the carrier on purpose)",
        f"end-to-end latency p50 {figures.percentile(50):.2f} s  p95 {figures.percentile(95):.2f} s  "
        f"p99 {figures.percentile(99):.2f} s",
        f"peak in flight     {result.peak_in_flight} orders, {result.peak_outside_calls} outside calls at once",
        "claim-to-complete by agent (successful attempts):",
    ]
    for agent, latencies in result.agents.items():
        lines.append(
            f"  {agent:<14} n={len(latencies.samples):<6} p50 {1000 * latencies.p(50):7.1f} ms  "
            f"p95 {1000 * latencies.p(95):7.1f} ms  p99 {1000 * latencies.p(99):7.1f} ms"
        )
    lines += model_lines(result)
    lines += [
        f"attempts {counts.attempts}  retries {counts.retries}  deferrals {counts.deferrals}  "
        f"reclaims {counts.reclaims}  fenced out {counts.fenced_out}  dead tasks {counts.dead_tasks}",
        "peak worker memory (RSS, with pool children): "
        + ", ".join(f"{name} {rss / MiB:.0f} MiB" for name, rss in sorted(result.peak_rss.items())),
        f"peak fleet memory (every worker with its pool, and beat, at one moment): "
        f"PSS {result.peak_fleet[1] / MiB:.0f} MiB (pages shared between processes counted once), "
        f"RSS {result.peak_fleet[0] / MiB:.0f} MiB",
        "",
        "invariants:" + ("" if result.quiet else " (the system did not become quiet within 180 s)"),
    ]
    for invariant in result.invariants:
        mark = "ok  " if invariant.holds else "FAIL"
        lines.append(f"  {mark} {invariant.number}. {invariant.name}")
        lines += [f"         {violation}" for violation in invariant.violations[:5]]
    return lines


def model_lines(result: LoadResult) -> list[str]:
    """The risk model's calls, tokens and cost, by model, beside what the endpoint billed."""
    models = result.models
    lines = [
        f"model calls {models.calls} ({sum(row.unbilled for row in models.by_model)} answered from the endpoint's "
        f"record, not billed), {models.tokens} tokens billed, cost {models.cost}; the endpoint made "
        f"{models.endpoint_calls} completions, {models.endpoint_tokens} tokens (a call our timeout cut is billed "
        "there, not here)"
    ]
    for row in models.by_model:
        lines.append(
            f"  {row.name:<14} calls {row.calls:<6} prompt {row.prompt_tokens:<8} completion "
            f"{row.completion_tokens:<8} cost {row.cost}"
        )
    return lines


def _png(figure) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    plt.close(figure)
    return base64.b64encode(buffer.getvalue()).decode()


def plots(result: LoadResult) -> dict[str, str]:
    """Title -> base64 PNG."""
    timeline = result.timeline
    end = max([*timeline.created, *timeline.finished, 1.0])
    bins = max(1, min(200, int(end) + 1))
    images = {}

    figure, axes = plt.subplots(figsize=(9, 3.2))
    axes.hist(timeline.created, bins=bins, range=(0, end), histtype="step", label="placed", color="#888")
    axes.hist(timeline.finished, bins=bins, range=(0, end), histtype="stepfilled", alpha=0.6, label="finished")
    axes.set_xlabel("seconds since the first order")
    axes.set_ylabel(f"orders per {end / bins:.1f} s")
    axes.legend()
    images["Throughput over time"] = _png(figure)

    figure, axes = plt.subplots(figsize=(9, 3.2))
    axes.scatter(timeline.finished, timeline.latencies, s=4, alpha=0.5)
    axes.set_xlabel("finished at (seconds since the first order)")
    axes.set_ylabel("end-to-end latency (s)")
    images["Latency over time"] = _png(figure)

    figure, axes = plt.subplots(figsize=(9, 3.2))
    axes.hist(timeline.latencies, bins=50)
    for p, style in ((50, "-"), (95, "--"), (99, ":")):
        axes.axvline(result.figures.percentile(p), color="black", linestyle=style, label=f"p{p}")
    axes.set_xlabel("end-to-end latency (s)")
    axes.set_ylabel("orders")
    axes.legend()
    images["Latency histogram"] = _png(figure)
    return images


def write_html(result: LoadResult, path: Path, title: str = "Load test", extra_lines: list[str] | None = None) -> Path:
    """One file, plots embedded, that opens anywhere without a server."""
    path.parent.mkdir(parents=True, exist_ok=True)
    figures = "\n".join(
        f'<h2>{html.escape(name)}</h2><img alt="{html.escape(name)}" src="data:image/png;base64,{data}">'
        for name, data in plots(result).items()
    )
    text = html.escape("\n".join([*(extra_lines or []), *summary_lines(result)]))
    spec = html.escape(repr(result.spec))
    path.write_text(
        f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)} {html.escape(result.run)}</title>
<style>body{{font-family:system-ui,sans-serif;max-width:980px;margin:2em auto;color:#222}}
pre{{background:#f6f6f6;padding:1em;overflow-x:auto}} img{{max-width:100%}}</style></head>
<body><h1>{html.escape(title)} {html.escape(result.run)}</h1>
<p><b>{result.figures.throughput:.1f} orders/s</b>, p95 {result.figures.percentile(95):.2f} s,
{100 * result.success_rate:.1f}% completed, invariants
{"all hold" if all(i.holds for i in result.invariants) else "VIOLATED"}.</p>
{figures}
<h2>Figures</h2><pre>{text}</pre>
<h2>Run</h2><pre>{spec}</pre>
</body></html>
"""
    )
    return path
