"""Where things go when nobody says otherwise, named once for the CLI, the configs and the Serve app.

Example:
    >>> DEFAULT_REGISTRY, SERVE_PORT
    ('runs/registry', 8000)
"""

DEFAULT_DATA = "runs/synthetic/data"  # where `tamor generate` + `tamor preprocess` write the synthetic world
DEFAULT_REGISTRY = "runs/registry"  # the model registry every command reads and writes by default
SERVE_PORT = 8000  # Serve's HTTP proxy port (its own default)
