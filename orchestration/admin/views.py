"""Admin pages for what is not a row: the circuit breakers (their state is in Redis) and
the lease sweep an operator may run now. Wired into the admin by orchestration.admin.site."""

from __future__ import annotations

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_http_methods, require_POST

from adminkit.pages import OPERATE_PERMISSION
from orchestration.admin import operators
from orchestration.limits.policies import breaker_policy
from orchestration.observability import figures

FORCE_CHOICES = {"open": "open", "closed": "closed", "release": None}


def _require_operator(request: HttpRequest) -> None:
    if not request.user.has_perm(OPERATE_PERMISSION):
        raise PermissionDenied("operator actions need the 'orchestration.operate' permission")


def _report(request: HttpRequest, outcome: operators.Outcome, noun: str) -> None:
    level = messages.SUCCESS if outcome.done and not outcome.refused else messages.ERROR
    if outcome.done and outcome.refused:
        level = messages.WARNING
    messages.add_message(request, level, outcome.summary(noun))


def _back(request: HttpRequest, default: str) -> HttpResponseRedirect:
    target = request.POST.get("next", "")
    if target and url_has_allowed_host_and_scheme(target, {request.get_host()}, request.is_secure()):
        return HttpResponseRedirect(target)
    return HttpResponseRedirect(default)


@require_http_methods(["GET", "POST"])
def breakers_view(request: HttpRequest) -> HttpResponse:
    """Every breaker with its state and policy; POST forces one open or closed, or releases it."""
    if request.method == "POST":
        _require_operator(request)
        dependency = request.POST.get("dependency", "")
        choice = request.POST.get("force", "")
        if choice not in FORCE_CHOICES:
            messages.error(request, f"unknown breaker action {choice!r}: use open, closed or release")
        else:
            outcome = operators.force_breaker(dependency, FORCE_CHOICES[choice], operator=request.user)
            _report(request, outcome, "breaker")
        return HttpResponseRedirect(reverse("admin:breakers"))

    rows, error = figures.breakers()
    for row in rows:
        row["policy"] = breaker_policy(row["dependency"])
        row["forced"] = row["state"].startswith("forced_")
        row["healthy"] = row["state"] in {"closed", "forced_closed"}
    context = {
        **admin.site.each_context(request),
        "title": "Circuit breakers",
        "breakers": rows,
        "error": error,
        "can_operate": request.user.has_perm(OPERATE_PERMISSION),
    }
    return TemplateResponse(request, "admin/operations/breakers.html", context)


@require_POST
def reclaim_view(request: HttpRequest) -> HttpResponse:
    """Run the lease sweep now; report how many claims it took back."""
    _require_operator(request)
    outcome = operators.reclaim_now(operator=request.user)
    level = messages.SUCCESS if outcome.done or "no claim" not in outcome.detail else messages.INFO
    messages.add_message(request, level, outcome.summary("task"))
    return _back(request, reverse("admin:index"))
