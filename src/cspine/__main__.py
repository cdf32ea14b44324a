"""``python -m cspine`` (and ``torchrun ... -m cspine``): the ``cspine`` command."""

from __future__ import annotations

from cspine.cli.main import main

if __name__ == "__main__":
    main()
