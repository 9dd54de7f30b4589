"""Everything about talking to models: the client (`client`), the bundled local models' servers
(`local_model`, `local_build`) and the one place that opens and closes a workspace's client (`session`).

Kept empty of re-exports so that importing one part never drags in the others."""
