"""Everything a person reads about a run: report.md, the PR body and job summary, and the terminal lines.

`text` holds the formatting every output shares (escaping of untrusted text, truncation, numbers, tables),
`sections` the parts report.md and the PR body both show, and each output has its own module on top.
"""
