"""The kernel's operator pages: the site (site.py), one module of registrations per kind of
row, the operators' actions and views, the timeline drawing.

This package imports nothing at load: the site module is the admin's default site, loaded
while Django sets the admin up, and a registration made during that import would land on a
half-made site. OrchestrationConfig.ready() imports the registrations instead.
"""
