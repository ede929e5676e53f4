"""The only code that knows Hydra, the command line and config paths: entry points, checks of a
composed config before any data is read, run folders and the console's one-line errors."""

from dnnlab.app.members import register as _register_resolvers

_register_resolvers()  # hydra.sweep.subdir names members with it, before any job runs
