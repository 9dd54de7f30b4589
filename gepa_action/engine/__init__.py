"""GEPA, reflective prompt evolution with Pareto selection (arXiv 2507.19457), for Jinja prompt templates.

`state` holds what a run knows (JSON, checkpointed), `pareto` picks parents, `reflect` writes and
validates proposals, `merge` combines lineages, `budget` refuses steps that do not fit, and `loop`
runs the iterations.
"""
