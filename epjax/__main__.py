"""``python -m epjax``: the ``epjax`` command line."""

from epjax.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
