"""gepa-tune: tune LLM prompts the way code is tuned, in git, reviewed in pull requests."""

__version__ = "0.1.0"
