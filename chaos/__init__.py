"""``make chaos``: faults injected into a production-like topology under load, audited.

Each scenario runs two of every AIMTP process plus the reference Controller against the
real MariaDB and Kafka, submits DAGs continuously, injects one fault, waits until the
pipeline is quiet, and audits what happened: nothing accepted may be lost, nothing created
twice, no DAG's events out of their commit order (see ``chaos.audit``).
"""
