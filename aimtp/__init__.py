"""The shared package of AIMTP: settings, the DAG model, the state machine, the event
contract, data access, logging and the ``aimtp`` command. The process packages
(``app``, ``outbox``, ``consumers``, ``sweeper``) import it and never each other."""
