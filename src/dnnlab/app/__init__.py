"""The only code that knows Hydra, the command line and config paths: entry points, checks of a
composed config before any data is read, run folders and the console's one-line errors."""
