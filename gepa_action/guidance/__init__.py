"""Reviewer guidance: what people said on a gepa-tune pull request, kept in the repository and given to
the next run (see items.py for the shape, store.py for `gepa.guidance.yaml`, rules.py for the checkable
rules, prompt.py for how the reflection model sees it and answers)."""
